"""Bouma's law per network: critical spacing against target eccentricity, from the results table.

In people the critical spacing (the target-flanker distance at which identification falls to a
threshold) grows linearly with eccentricity: critical = b * eccentricity + c, with the Bouma factor b
about 0.3 to 0.6 (HUMAN_BOUMA; the sources in docs/bouma.md). Here, per network (model, learning rate):

  condition     the paper's two-flanker condition xax (a flanker on each side of the target at
                spacing S, `LABEL`); the isolated target `a` at the same eccentricity sets the top;
  function      accuracy(S) = chance + (isolated - chance) * F(S), with the Weibull
                F(S) = 1 - (1 - THRESHOLD) ** ((S / critical) ** steepness): chance (1 / classes) at
                S = 0, the isolated accuracy far out; fitted by scipy.optimize.curve_fit (critical and
                steepness, on a log scale) to the accuracies at the tested spacings;
  critical      the spacing where accuracy is THRESHOLD (one half) of the way from chance up to the
                isolated accuracy; reported only inside the tested spacings;
  interval      bootstrap (N_BOOT replicates, RNG seeded with BOOT_SEED): each replicate resamples
                the test images (the same images in every condition: paired) and, with several seeds,
                the seeds (each a trained network), refits every eccentricity; 2.5th and 97.5th
                percentiles. One seed: about that network; several: the architecture;
  Bouma line    least squares of critical spacing on eccentricity over the eccentricities with a
                critical spacing; its interval from the same replicates (one line per replicate).

An eccentricity is left out, with the reason, when its isolated target is not clearly above chance
(results.visibility's floor rule), it has fewer than MIN_SPACINGS spacings, or the fitted curve does
not cross the threshold within the tested spacings. A line needs MIN_ECCS eccentricities.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import stats, visibility

logger = logging.getLogger(__name__)

# People: critical spacing / eccentricity. Bouma (1970), Nature 226:177: about 0.5; van den Berg,
# Roerdink & Cornelissen (2010), PLoS Comput Biol 6:e1000646: "typically reported in the
# literature (0.3-0.6 times target eccentricity)"; Whitney & Levi (2011), Trends Cogn Sci 15:160:
# roughly half the eccentricity. The band the verdict and the figure use:
HUMAN_BOUMA = (0.3, 0.6)
HUMAN_SOURCE = "people 0.3-0.6 (Bouma 1970; van den Berg et al. 2010; Whitney & Levi 2011)"
LABEL = "xax"          # the flanked condition fitted: two flankers, the paper's
THRESHOLD = 0.5        # the share of the way from chance to the isolated accuracy that defines critical
MIN_SPACINGS = 4       # tested spacings an eccentricity needs for a fit (2 parameters)
MIN_ECCS = 3           # eccentricities with a critical spacing a Bouma line needs
N_BOOT = 1000          # bootstrap replicates
BOOT_SEED = 0          # the bootstrap's RNG seed: the same intervals on every run
_ATOL = 1e-6


@dataclass(frozen=True)
class Critical:
    """The critical spacing at one target eccentricity, or why there is none (reason)."""

    target_ecc: float
    spacings: tuple[float, ...] = ()
    accuracy: tuple[float, ...] = ()     # LABEL's accuracy at each spacing (mean over seeds)
    isolated: float = math.nan
    chance: float = math.nan
    critical: float = math.nan
    low: float = math.nan
    high: float = math.nan
    steepness: float = math.nan
    reason: str = ""

    @property
    def fitted(self) -> bool:
        return not self.reason


@dataclass(frozen=True)
class BoumaFit:
    """One network's critical spacings and its Bouma line (factor, intercept), or why there is none."""

    model: str
    learning_rate: float
    points: tuple[Critical, ...] = ()
    seeds: tuple[int, ...] = ()
    n_images: int = 0
    factor: float = math.nan
    factor_low: float = math.nan
    factor_high: float = math.nan
    intercept: float = math.nan
    intercept_low: float = math.nan
    intercept_high: float = math.nan
    reason: str = ""
    n_boot: int = 0

    @property
    def verdict(self) -> str:
        """'crowds like people: factor 0.42 (0.35 to 0.50)', or what else the line shows, or the reason."""
        return self.reason or verdict(self.factor, self.factor_low, self.factor_high)

    @property
    def scope(self) -> str:
        return "" if not self.seeds else "this network" if len(self.seeds) == 1 else "architecture"


@dataclass(frozen=True)
class Records:
    """What one network's fit reads: per target eccentricity, the isolated target's and LABEL's
    per-image hits at each spacing (bool, seeds x images, the same images everywhere; None: not
    read, too few spacings to fit)."""

    chance: float
    isolated: Mapping[float, np.ndarray]
    flanked: Mapping[float, Mapping[float, np.ndarray | None]]
    missing: Mapping[float, str] = field(default_factory=dict)  # eccentricities without records: why


def verdict(factor: float, low: float, high: float) -> str:
    """The Bouma factor's verdict against HUMAN_BOUMA from its interval."""
    if not all(math.isfinite(v) for v in (factor, low, high)):
        return "no Bouma line: the bootstrap gave no interval"
    text = f"factor {factor:.2f} ({low:.2f} to {high:.2f})"
    if low <= 0 <= high:
        return f"no Bouma-like growth: {text}"
    if high < 0:
        return f"no Bouma-like growth: critical spacing shrinks with eccentricity, {text}"
    if low <= HUMAN_BOUMA[1] and high >= HUMAN_BOUMA[0]:
        return f"crowds like people: {text}"
    return f"Bouma-like growth, {text} outside the human range ({HUMAN_BOUMA[0]:g} to {HUMAN_BOUMA[1]:g})"


# ----------------------------------------------------------------------------- the psychometric function
def psychometric(spacing: Any, critical: float, steepness: float, chance: float, isolated: float) -> np.ndarray:
    """Accuracy at `spacing`: chance at 0 rising to `isolated`, THRESHOLD of the way at `critical` (Weibull)."""
    s = np.maximum(np.asarray(spacing, dtype=float), 0.0)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        rise = 1 - (1 - THRESHOLD) ** ((s / critical) ** steepness)
    return chance + (isolated - chance) * rise


def fit_critical(spacings: np.ndarray, accuracy: np.ndarray, chance: float, isolated: float,
                 start: tuple[float, float] | None = None) -> tuple[float, float]:
    """(critical, steepness) of `psychometric` by least squares (curve_fit, Levenberg-Marquardt on
    their logs); NaN when it fails. Without `start`, the best of a few starting points."""
    from scipy.optimize import OptimizeWarning, curve_fit  # here: scipy.optimize takes a second to import

    def model(s: np.ndarray, log_c: float, log_k: float) -> np.ndarray:
        return psychometric(s, math.exp(min(log_c, 50.0)), math.exp(min(log_k, 5.0)), chance, isolated)

    starts = [start] if start else [(float(np.median(spacings)), k) for k in (1.5, 4.0)] + [
        (float(spacings.min()), 2.0), (float(spacings.max()), 2.0)]
    best, best_sse = (math.nan, math.nan), math.inf
    for c0, k0 in starts:
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", OptimizeWarning)
                p, _ = curve_fit(model, spacings, accuracy, p0=(math.log(c0), math.log(k0)), maxfev=400)
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((model(spacings, *p) - accuracy) ** 2))
        if math.isfinite(sse) and sse < best_sse:
            best, best_sse = (math.exp(min(p[0], 50.0)), math.exp(min(p[1], 5.0))), sse
    return best


def fit_replicates(spacings: np.ndarray, accuracy: np.ndarray, chance: float, isolated: np.ndarray,
                   start: tuple[float, float], iterations: int = 60) -> np.ndarray:
    """The critical spacing of each bootstrap replicate (accuracy: replicates x spacings, isolated: one
    per replicate): the least squares of `fit_critical`, solved for all replicates at once by
    Levenberg-Marquardt on (log critical, log steepness) from `start` (curve_fit one by one took 0.6 ms
    a replicate: 40 s for a demo grid's networks). NaN where it does not converge."""
    s = np.maximum(np.asarray(spacings, dtype=float), 1e-9)[None, :]        # (1, K)
    y, top = np.asarray(accuracy, dtype=float), np.asarray(isolated, dtype=float)[:, None] - chance
    log_miss = math.log(1 - THRESHOLD)
    p = np.tile(np.log(np.asarray(start, dtype=float)), (len(y), 1))        # (B, 2)
    damping = np.full(len(y), 1e-3)

    def residuals(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, k = np.exp(np.minimum(p[:, :1], 50.0)), np.exp(np.minimum(p[:, 1:], 5.0))
        u = (s / c) ** k
        g = np.exp(log_miss * u)
        d_logc = top * log_miss * g * k * u                                # d accuracy / d log critical
        jac = np.stack([d_logc, -d_logc * np.log(s / c)], axis=-1)          # (B, K, 2)
        return chance + top * (1 - g) - y, jac

    with np.errstate(all="ignore"):
        r, jac = residuals(p)
        sse = (r**2).sum(axis=1)
        for _ in range(iterations):
            jtj, jtr = np.einsum("bki,bkj->bij", jac, jac), np.einsum("bki,bk->bi", jac, r)
            scaled = jtj + damping[:, None, None] * (jtj * np.eye(2) + 1e-12 * np.eye(2))
            det = scaled[:, 0, 0] * scaled[:, 1, 1] - scaled[:, 0, 1] * scaled[:, 1, 0]
            step = -np.stack([scaled[:, 1, 1] * jtr[:, 0] - scaled[:, 0, 1] * jtr[:, 1],
                              scaled[:, 0, 0] * jtr[:, 1] - scaled[:, 1, 0] * jtr[:, 0]], axis=1) / det[:, None]
            trial = p + np.nan_to_num(step)
            r_new, jac_new = residuals(trial)
            sse_new = (r_new**2).sum(axis=1)
            better = np.isfinite(sse_new) & (sse_new <= sse)
            p, r, sse = np.where(better[:, None], trial, p), np.where(better[:, None], r_new, r), \
                np.where(better, sse_new, sse)
            jac = np.where(better[:, None, None], jac_new, jac)
            damping = np.clip(np.where(better, damping * 0.3, damping * 10), 1e-12, 1e12)
        # Converged: the residuals orthogonal to the Jacobian's columns (MINPACK's gtol), cosine < 1e-4.
        norms = np.sqrt(np.einsum("bki,bki->bi", jac, jac)) * np.sqrt(sse)[:, None]
        cosine = np.abs(np.einsum("bki,bk->bi", jac, r)) / norms
        converged = np.isfinite(sse) & ((norms == 0) | (cosine < 1e-4)).all(axis=1)
    return np.where(converged, np.exp(np.minimum(p[:, 0], 50.0)), np.nan)


# ----------------------------------------------------------------------------- one network
def _replicate_weights(rng: np.random.Generator, n: int, s: int, n_boot: int) -> tuple[np.ndarray, np.ndarray]:
    """Per replicate, how often each image (n_boot x n) and each seed (n_boot x s) is drawn."""
    images = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float32)
    seeds = rng.multinomial(s, np.full(s, 1.0 / s), size=n_boot).astype(np.float32) if s > 1 else \
        np.ones((n_boot, 1), np.float32)
    return images, seeds


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    ok = values[np.isfinite(values)]
    if len(ok) < len(values) / 2:  # most replicates failed: no honest interval
        return math.nan, math.nan
    lo, hi = np.percentile(ok, [2.5, 97.5])
    return float(lo), float(hi)


def fit_network(model: str, learning_rate: float, records: Records, seeds: Sequence[int] = (0,), *,
                n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> BoumaFit:
    """One network's critical spacings and Bouma line from its per-image records (module docstring)."""
    points: dict[float, Critical] = {t: Critical(t, reason=why) for t, why in records.missing.items()}
    cells: list[np.ndarray] = []
    todo: list[tuple[float, list[float]]] = []
    for t in sorted(set(records.isolated) | set(records.flanked)):
        iso = np.atleast_2d(records.isolated.get(t, np.zeros((0, 0), bool)))    # (S, n)
        flanked = records.flanked.get(t, {})
        why = visibility.isolated_reason(iso.sum(axis=1), np.full(len(iso), iso.shape[1]), records.chance, model, t)
        spacings = sorted(flanked)
        if why is None and len(spacings) < MIN_SPACINGS:
            why = f"too few spacings ({len(spacings)}) at target {t:g}: a fit needs {MIN_SPACINGS}"
        if why:
            points[t] = Critical(t, tuple(spacings), reason=why)
            continue
        todo.append((t, spacings))
        cells += [iso, *(np.atleast_2d(flanked[s]) for s in spacings)]
    n_seeds, n_images = (cells[0].shape if cells else (len(seeds), 0))
    boot: dict[float, np.ndarray] = {}
    if cells:
        hits = np.stack(cells).astype(np.float32)                          # (C, S, n)
        images, seed_w = _replicate_weights(np.random.default_rng(seed), n_images, n_seeds, n_boot)
        per_seed = (hits.reshape(-1, n_images) @ images.T).reshape(len(cells), n_seeds, n_boot)
        replicas = np.einsum("csb,bs->cb", per_seed, seed_w) / (n_seeds * n_images)  # (C, B) accuracies
        point = hits.mean(axis=(1, 2))
        i = 0
        for t, spacings in todo:
            rows = slice(i, i + 1 + len(spacings))
            points[t], boot[t] = _fit_eccentricity(t, np.array(spacings), point[rows], replicas[rows], records.chance)
            i += 1 + len(spacings)
    ordered = tuple(points[t] for t in sorted(points))
    fit = BoumaFit(model, learning_rate, ordered, tuple(seeds), int(n_images), n_boot=n_boot)
    return _line(fit, {t: b for t, b in boot.items() if points[t].fitted})


def _fit_eccentricity(t: float, spacings: np.ndarray, point: np.ndarray, replicas: np.ndarray,
                      chance: float) -> tuple[Critical, np.ndarray]:
    """The critical spacing at one eccentricity (rows: the isolated target, then each spacing) and
    its bootstrap replicates."""
    iso, acc = float(point[0]), point[1:]
    base = Critical(t, tuple(float(s) for s in spacings), tuple(float(a) for a in acc), iso, chance)
    critical, steep = fit_critical(spacings, acc, chance, iso)
    lo_s, hi_s = float(spacings.min()), float(spacings.max())
    if not math.isfinite(critical):
        return replace(base, reason=f"the psychometric fit did not converge at target {t:g}"), np.array([])
    level = chance + THRESHOLD * (iso - chance)
    if critical < lo_s:
        return replace(base, critical=critical, reason=f"no crowding within the tested spacings at target {t:g}: "
                     f"{LABEL} is above {level:.2f} (half way from chance to isolated) from spacing {lo_s:g}"), \
            np.array([])
    if critical > hi_s:
        return replace(base, critical=critical, reason=f"crowding beyond the tested spacings at target {t:g}: {LABEL} "
                     f"stays below {level:.2f} (half way from chance to isolated) up to spacing {hi_s:g}"), \
            np.array([])
    reps = fit_replicates(spacings, replicas[1:].T, chance, replicas[0], (critical, steep))
    low, high = _percentiles(reps)
    return replace(base, critical=critical, steepness=steep, low=low, high=high), reps


def _line(fit: BoumaFit, boot: dict[float, np.ndarray]) -> BoumaFit:
    """The Bouma line over the eccentricities with a critical spacing, its interval from the same replicates."""
    eccs = sorted(boot)
    if len(eccs) < MIN_ECCS:
        return replace(fit, reason=f"too few eccentricities with a critical spacing ({len(eccs)}): a Bouma line "
                       f"needs {MIN_ECCS}")
    x = np.array(eccs)
    y = np.array([next(p.critical for p in fit.points if p.target_ecc == t) for t in eccs])
    slope, intercept = np.polyfit(x, y, 1)
    reps = np.stack([boot[t] for t in eccs])                            # (E, B): replicate b's critical spacings
    ok = np.isfinite(reps).all(axis=0)
    (s_lo, s_hi), (i_lo, i_hi) = ((math.nan, math.nan),) * 2
    if ok.sum() >= len(ok) / 2:  # most replicates gave every critical spacing: one line each
        slopes, intercepts = np.polyfit(x, reps[:, ok], 1)
        (s_lo, s_hi), (i_lo, i_hi) = _percentiles(slopes), _percentiles(intercepts)
    return replace(fit, factor=float(slope), factor_low=s_lo, factor_high=s_hi, intercept=float(intercept),
                   intercept_low=i_lo, intercept_high=i_hi)


# ----------------------------------------------------------------------------- from an experiment folder
def read_records(exp_dir: str | Path, rows: pd.DataFrame, model: str,
                 flanker_dset: str = "MNIST") -> tuple[Records, list[int], str]:
    """One configuration's done rows -> its Records, its seeds, and a reason when the records cannot
    be paired (different test images)."""
    rows = rows.assign(seed=stats._seed_column(rows))
    done = rows[rows["state"] == "done"]
    seeds = sorted(set(done["seed"]))
    isolated: dict[float, np.ndarray] = {}
    flanked: dict[float, dict[float, np.ndarray | None]] = {}
    missing: dict[float, str] = {}
    images: list[Any] = []

    def hits(cell: pd.DataFrame) -> np.ndarray | None:
        got = []
        for s in seeds:
            row = cell[cell["seed"] == s]
            record = stats.hits_of(exp_dir, row.iloc[0]) if len(row) else None
            if record is None:
                return None
            if record[1] not in images:
                images.append(record[1])
            got.append(record[0])
        return np.stack(got) if len({len(g) for g in got}) == 1 else None

    for t in sorted(set(done["target_ecc"].dropna())):
        at = done[np.isclose(done["target_ecc"].to_numpy(float), t, atol=_ATOL)]
        a = at[at["label"] == "a"]
        a = a[a["flanker_dset"] == flanker_dset] if (a["flanker_dset"] == flanker_dset).any() else a
        fl = at[(at["label"] == LABEL) & (at["flanker_dset"] == flanker_dset)]
        if a.empty and fl.empty:
            continue
        iso = hits(a) if not a.empty else None
        if iso is None and not a.empty:
            missing[float(t)] = f"no per-image record (correct.npy) of the isolated target at target {t:g}"
            continue
        if iso is not None:
            isolated[float(t)] = iso
        cells = dict(list(fl.groupby(fl["spacing"].round(6))))
        enough = len(cells) >= MIN_SPACINGS and iso is not None  # else fit_network says why, reading nothing
        for s, cell in cells.items():
            h = hits(cell) if enough else None
            if h is not None or not enough:
                flanked.setdefault(float(t), {})[float(s)] = h
    why = "" if len(images) <= 1 else f"conditions were evaluated on {len(images)} different test sets: cannot pair"
    return Records(visibility.chance_of(rows), isolated, flanked, missing), seeds, why


def fits(exp_dir: str | Path, table: pd.DataFrame, *, n_boot: int = N_BOOT, seed: int = BOOT_SEED,
         flanker_dset: str = "MNIST") -> list[BoumaFit]:
    """Every evaluated configuration (model, learning rate) of a results table (one row per seed:
    results.table.collect, not the figures' mean): its critical spacings and Bouma line."""
    out = []
    evaluated = table[(table["model_hash"] != "") & table["flanker_type"].notna()]
    for model, lr in stats.configurations(table):
        rows = evaluated[(evaluated["model"] == model) & np.isclose(evaluated["learning_rate"].astype(float), lr)]
        try:
            records, seeds, why = read_records(exp_dir, rows, model, flanker_dset)
            fit = BoumaFit(model, lr, seeds=tuple(seeds), reason=why) if why else \
                fit_network(model, lr, records, seeds, n_boot=n_boot, seed=seed)
        except Exception as e:  # one network's fit never costs the report
            logger.exception("Bouma fit of %s failed", model)
            fit = BoumaFit(model, lr, reason=f"the fit failed: {type(e).__name__}: {e}")
        out.append(fit)
    return out
