"""Coverage of every interval findings.md and summary.csv report, by simulating experiments whose effect is known.

    python bench/coverage.py [--quick] [--reps N] [--images N] [--seed N]

The model (probit, one test set shared by every seed and condition): image i of seed s is right in
condition c when
    sqrt(0.3) d_i + sqrt(0.2) g_ci + sqrt(0.2) f_si + sqrt(0.3) eps_sci  <  m_c + u_s + v_sc
d_i the image's difficulty (shared across conditions and seeds), g_ci an image x condition effect
(how much flankers hurt that image, shared across seeds), f_si a seed x image effect (shared by a
network's conditions), eps fresh noise, u_s a seed effect and v_sc a seed x condition effect, both
N(0, sigma^2). m_c = Phi^-1(acc_c) sqrt(1 + 2 sigma^2), so the architecture's accuracy (any seed, any
image) is exactly acc_c: 0.85 in condition A, 0.70 in B, a true effect A - B of 15 points. A network's
own accuracy is Phi(m_c + u_s + v_sc). sigma is set so that the spread of the networks' effects (their
sd) is 0, 1 or 3 times the standard error of one network's effect on the test set (the image SE).

For each number of seeds and spread, `--reps` experiments; per interval, the share that covers the
truth it speaks about (one network: that network's effect or accuracy; the architecture: the true
effect or accuracy) with its Monte Carlo standard error, and the mean width. One-seed intervals are
also scored against the architecture, to show what they do not cover. Every interval comes from the
code findings.md and summary.csv use (results.intervals, results.stats).
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results import intervals, stats

ACC = (0.85, 0.70)  # architecture accuracy in conditions A and B
SHARE = (0.3, 0.2, 0.2)  # variance shares of image difficulty, image x condition, seed x image
SEEDS = (1, 2, 3, 5, 10)
SPREADS = (0.0, 1.0, 3.0)  # sd of the networks' effects, in image SEs


@dataclass(frozen=True)
class Model:
    n_images: int
    sigma: float  # sd of the seed and of the seed x condition probit effects

    @property
    def m(self) -> np.ndarray:
        return sps.norm.ppf(ACC) * math.sqrt(1 + 2 * self.sigma**2)


@functools.lru_cache
def image_se(n_images: int) -> float:
    """Standard error of one network's effect A - B on n test images (no seed effect)."""
    qa, qb = sps.norm.ppf(ACC)
    rho = SHARE[0] + SHARE[2]  # correlation of one image's latents in two conditions of one network
    both = sps.multivariate_normal([0, 0], [[1, rho], [rho, 1]]).cdf([qa, qb])
    var = ACC[0] * (1 - ACC[0]) + ACC[1] * (1 - ACC[1]) - 2 * (both - ACC[0] * ACC[1])
    return math.sqrt(var / n_images)


def sigma_for(spread: float, n_images: int) -> float:
    """The probit sd giving networks' effects an sd of `spread` image SEs (bisection, fixed draws)."""
    if spread == 0:
        return 0.0
    target = spread * image_se(n_images)
    z = np.random.default_rng(12345).standard_normal((3, 50_000))

    def sd(sigma: float) -> float:
        m = sps.norm.ppf(ACC) * math.sqrt(1 + 2 * sigma**2)
        eff = sps.norm.cdf(m[0] + sigma * (z[0] + z[1])) - sps.norm.cdf(m[1] + sigma * (z[0] + z[2]))
        return float(eff.std())

    lo, hi = 0.0, 2.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sd(mid) < target else (lo, mid)
    return (lo + hi) / 2


def experiment(model: Model, seeds: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """hits (seeds x 2 conditions x images, bool) and the networks' true accuracies (seeds x 2)."""
    n = model.n_images
    a, b, c = SHARE
    d, g = rng.standard_normal(n), rng.standard_normal((2, n))
    f = rng.standard_normal((seeds, 1, n))
    latent = (math.sqrt(a) * d + math.sqrt(b) * g + math.sqrt(c) * f
              + math.sqrt(1 - a - b - c) * rng.standard_normal((seeds, 2, n)))
    q = model.m[None, :] + model.sigma * (rng.standard_normal((seeds, 1)) + rng.standard_normal((seeds, 2)))
    return latent < q[:, :, None], sps.norm.cdf(q)


def intervals_of(hits: np.ndarray) -> dict[str, tuple[float, float, str]]:
    """Every interval the reports give for this experiment: name -> (low, high, what it covers)."""
    s, _, n = hits.shape
    ha, hb = hits[:, 0], hits[:, 1]
    k = hits.sum(axis=2).astype(float)
    p = k / n
    out: dict[str, tuple[float, float, str]] = {}
    e = ha.astype(float) - hb.astype(float)
    counts = intervals.seed_counts_interval(p[:, 0] - p[:, 1], (p * (1 - p)).sum(axis=1) / n)
    acc = stats.accuracy_interval(k[:, 0], np.full(s, n))
    if s == 1:
        c = stats.paired_difference(ha[0], hb[0])
        out["findings: Newcombe, two conditions"] = (c.low, c.high, "effect")
        t = intervals.crossed_interval(e)
        out["findings: t over images, other claims"] = (t.low, t.high, "effect")
        out["findings: unpaired normal, counts only"] = (counts.low, counts.high, "effect")
        out["summary.csv: Wilson"] = (acc.low, acc.high, "accuracy")
    else:
        c = intervals.crossed_interval(e)
        out["findings: crossed seeds x images"] = (c.low, c.high, "effect")
        out["findings: t over seeds + test set, counts only"] = (counts.low, counts.high, "effect")
        out["summary.csv: accuracy over seeds"] = (acc.low, acc.high, "accuracy")
    return out


def run(reps: int, n_images: int, seed: int, seed_counts=SEEDS, spreads=SPREADS) -> list[dict]:
    """One row per (interval, seeds, spread): coverage of the network and of the architecture, width."""
    rows = []
    for spread in spreads:
        model = Model(n_images, sigma_for(spread, n_images))
        for s in seed_counts:
            rng = np.random.default_rng([seed, s, int(spread * 10)])
            hit: dict[str, list[tuple[bool, bool, float]]] = {}
            net_effects = []
            for _ in range(reps):
                hits, true = experiment(model, s, rng)
                net_effects.append(true[:, 0] - true[:, 1])
                for name, (lo, hi, what) in intervals_of(hits).items():
                    arch = ACC[0] - ACC[1] if what == "effect" else ACC[0]
                    net = float(true[0, 0] - true[0, 1]) if what == "effect" else float(true[0, 0])
                    hit.setdefault(name, []).append((lo <= net <= hi, lo <= arch <= hi, hi - lo))
            for name, got in hit.items():
                g = np.array(got, dtype=float)
                rows.append({"interval": name, "seeds": s, "spread": spread, "network": g[:, 0].mean(),
                             "architecture": g[:, 1].mean(), "width": g[:, 2].mean(), "reps": reps,
                             "measured_spread": float(np.std(np.concatenate(net_effects))) / image_se(n_images)})
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: per interval and number of seeds, one column per spread with the coverage +- its
    Monte Carlo SE and the mean width; one seed: the network's coverage, then the architecture's."""
    def cov(c: float, r: int) -> str:
        return f"{c:.3f} ± {math.sqrt(max(c * (1 - c), 1e-12) / r):.3f}"

    spreads = sorted({r["spread"] for r in rows})
    cells: dict[tuple[str, int], dict[float, dict]] = {}
    for r in rows:
        cells.setdefault((r["interval"], r["seeds"]), {})[r["spread"]] = r
    head = " | ".join(f"spread {s:g}x" for s in spreads)
    lines = [f"| interval | seeds | covers | {head} |", "|---|---|---|" + "---|" * len(spreads)]
    for (name, seeds), by in sorted(cells.items(), key=lambda kv: (kv[0][1] > 1, kv[0][0], kv[0][1])):
        if seeds == 1:
            parts = [f"{cov(by[s]['network'], by[s]['reps'])} (arch. {by[s]['architecture']:.2f}), "
                     f"{100 * by[s]['width']:.1f} pp" for s in spreads]
            lines.append(f"| {name} | 1 | this network | {' | '.join(parts)} |")
        else:
            parts = [f"{cov(by[s]['architecture'], by[s]['reps'])}, {100 * by[s]['width']:.1f} pp" for s in spreads]
            lines.append(f"| {name} | {seeds} | architecture | {' | '.join(parts)} |")
    measured = ", ".join(f"{s:g}x -> {np.mean([r['measured_spread'] for r in rows if r['spread'] == s]):.2f}"
                         for s in spreads)
    return "\n".join([*lines, "", f"spread of the simulated networks' effects, in image SEs: {measured}"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer experiments per cell (1000): under a minute")
    ap.add_argument("--reps", type=int, default=None, help="experiments per cell (default 5000, --quick 1000)")
    ap.add_argument("--images", type=int, default=400, help="test images per condition")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    reps = args.reps or (1000 if args.quick else 5000)
    t0 = time.perf_counter()
    rows = run(reps, args.images, args.seed)
    print(f"{reps} simulated experiments per row, {args.images} images, accuracies {ACC[0]} / {ACC[1]} "
          f"(true effect {100 * (ACC[0] - ACC[1]):.0f} pp), image SE {100 * image_se(args.images):.2f} pp")
    print(table(rows))
    arch = [r for r in rows if r["seeds"] >= 3]
    worst = min(arch, key=lambda r: r["architecture"])
    print(f"lowest architecture coverage from 3 seeds: {worst['architecture']:.3f} ({worst['interval']}, "
          f"{worst['seeds']} seeds, spread {worst['spread']:g}); target >= 0.93")
    print(f"{time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
