"""Claims an experiment tests, measured as effects with 95% intervals and verdicts: findings.md / .csv.

A sweep declares its claims (`SweepSpec.claims`) next to its figures, as data: a Claim is a
weighted sum of accuracies of a few conditions (Terms), averaged over target eccentricities, whose
sign the paper predicts. The claim holds when the effect is positive:

    effect = mean over x of  sum_k weight_k * accuracy(term_k at target eccentricity x)

where x runs over the claim's target eccentricities (default: every one at which all its terms were
evaluated), and a term with its own target_ecc ignores x. The verdict, from the 95% interval:
supported (above 0), contradicted (below 0), inconclusive (it contains 0).

The effect is computed image by image from the per-image records (every term is evaluated on the
same test images, by ecc.evaluate's record): per seed s and image i, e_s(i) = mean_x sum_k w_k
hit_k(x, s, i); the effect is the mean of e over seeds and images. Interval: a comparison of two
conditions with one seed uses Newcombe's paired interval (and the exact McNemar p); anything else
the bootstrap over seeds and images (results.stats). Evaluations without a per-image record (older
experiment folders) fall back to the counts, with an unpaired normal interval (wider), and say so.

Other sweeps add claims by adding entries, e.g. a DCNN vs the eccentricity model at the centre:
`Claim("ecc beats dcnn", ..., terms=(Term("xax", 120, target_ecc=0), Term("xax", 120, target_ecc=0,
weight=-1, model="dcnn")), models=("ecc",))` (terms from another model pair its seeds by index).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.atomic import atomic_write_bytes

from . import stats

logger = logging.getLogger(__name__)

FINDINGS_MD, FINDINGS_CSV = "findings.md", "findings.csv"
VERDICTS = ("supported", "contradicted", "inconclusive")
FINDINGS_COLUMNS = ("claim", "model", "learning_rate", "effect", "ci_low", "ci_high", "verdict", "method",
                    "seeds", "n_images", "target_eccs", "p_value", "statement", "measure", "note")
_ATOL = 1e-6


@dataclass(frozen=True)
class Term:
    """One condition of a claim: its label (a, xa, ax, xax), spacing (flanked labels) and weight."""

    label: str
    spacing: float | None = None      # |flanker_ecc - target_ecc|; None for "a"
    weight: float = 1.0
    target_ecc: float | None = None   # None: the claim's running target eccentricity x
    flanker_dset: str = "MNIST"
    model: str | None = None          # None: the model the claim is being tested on

    def __post_init__(self) -> None:
        if self.label not in ("a", "xa", "ax", "xax"):
            raise ValueError(f"term label {self.label!r} is not one of a, xa, ax, xax")
        if (self.label == "a") != (self.spacing is None):
            raise ValueError(f"term {self.label!r}: a spacing is needed for flanked labels and only for them, "
                             f"got {self.spacing!r}")

    def describe(self) -> str:
        at = "x" if self.target_ecc is None else f"{self.target_ecc:g}"
        sp = "" if self.spacing is None else f", spacing {self.spacing:g}"
        who = "" if self.model is None else f" of {self.model}"
        return f"{self.label}(target {at}{sp}){who}"


@dataclass(frozen=True)
class Claim:
    """A claim of the paper that the experiment tests; it holds when the effect is > 0."""

    name: str
    statement: str                      # the claim in words
    terms: tuple[Term, ...]
    measure: str = ""                   # what the effect measures, in words (default: from the terms)
    target_eccs: tuple[float, ...] | None = None  # x values; None: every one where all terms exist
    models: tuple[str, ...] = ()        # models it is tested on; () = every evaluated model

    def __post_init__(self) -> None:
        if not self.terms:
            raise ValueError(f"claim {self.name!r} has no terms")

    def formula(self) -> str:
        parts = []
        for t in self.terms:
            w = "" if abs(t.weight) == 1 else f"{abs(t.weight):g}*"
            parts.append(("- " if t.weight < 0 else "+ ") + w + t.describe())
        text = " ".join(parts).lstrip("+ ")
        return f"mean over x of [{text}]" if any(t.target_ecc is None for t in self.terms) else text


@dataclass
class Finding:
    claim: Claim
    model: str
    learning_rate: float
    effect: float = math.nan
    low: float = math.nan
    high: float = math.nan
    method: str = ""
    seeds: list[int] = field(default_factory=list)
    n_images: int = 0
    target_eccs: list[float] = field(default_factory=list)
    p_value: float = math.nan
    note: str = ""

    @property
    def verdict(self) -> str:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return "inconclusive"
        return "supported" if self.low > 0 else "contradicted" if self.high < 0 else "inconclusive"

    def row(self) -> dict[str, Any]:
        return {"claim": self.claim.name, "model": self.model, "learning_rate": self.learning_rate,
                "effect": self.effect, "ci_low": self.low, "ci_high": self.high, "verdict": self.verdict,
                "method": self.method, "seeds": ",".join(map(str, self.seeds)), "n_images": self.n_images,
                "target_eccs": ",".join(f"{x:g}" for x in self.target_eccs), "p_value": self.p_value,
                "statement": self.claim.statement, "measure": self.claim.measure or self.claim.formula(),
                "note": self.note}


# ----------------------------------------------------------------------------- evaluating a claim
def _term_rows(rows: pd.DataFrame, term: Term) -> pd.DataFrame:
    """The done rows of a term's label (and spacing and flanker set), at any target eccentricity."""
    m = (rows["label"] == term.label) & (rows["state"] == "done")
    if term.spacing is not None:
        m &= np.isclose(rows["spacing"].to_numpy(float), term.spacing, atol=_ATOL)
        m &= rows["flanker_dset"] == term.flanker_dset
    return rows[m]


def _matches(rows: pd.DataFrame, term: Term, x: float | None) -> pd.DataFrame:
    te = term.target_ecc if term.target_ecc is not None else x
    return rows[np.isclose(rows["target_ecc"].to_numpy(float), float(te), atol=_ATOL)]


def _x_values(claim: Claim, by_term: Sequence[pd.DataFrame]) -> list[float | None]:
    running = [i for i, t in enumerate(claim.terms) if t.target_ecc is None]
    if not running:
        return [None]
    xs = None
    for i in running:
        have = {round(float(v), 6) for v in by_term[i]["target_ecc"]}
        xs = have if xs is None else xs & have
    if claim.target_eccs is not None:
        xs = (xs or set()) & {round(float(v), 6) for v in claim.target_eccs}
    return sorted(xs or [])


def evaluate_claim(exp_dir: str | Path, table: pd.DataFrame, claim: Claim, model: str,
                   learning_rate: float) -> Finding:
    """The effect of one claim on one configuration (model, learning rate) of a results table."""
    f = Finding(claim, model, learning_rate)
    table = table[(table["model_hash"] != "") & table["flanker_type"].notna()]
    table = table.assign(seed=stats._seed_column(table))

    def config_rows(term: Term) -> pd.DataFrame:
        name = term.model or model
        rows = table[table["model"] == name]
        if term.model is None or len(set(rows["learning_rate"])) == 1:
            same = rows[np.isclose(rows["learning_rate"].to_numpy(float), learning_rate)]
            rows = same if term.model is None or len(same) else rows
        return rows

    pools = [_term_rows(config_rows(t), t) for t in claim.terms]
    xs = _x_values(claim, pools)
    if not xs:
        f.note = "no target eccentricity at which every term was evaluated"
        return f
    cells = {(i, x): _matches(p, t, x) for i, (p, t) in enumerate(zip(pools, claim.terms, strict=True)) for x in xs}
    seeds = None
    for rows in cells.values():
        have = set(rows["seed"])
        seeds = have if seeds is None else seeds & have
    seeds = sorted(seeds or [])
    if not seeds:
        f.note = "no seed for which every term was evaluated"
        return f
    f.seeds, f.target_eccs = seeds, [x for x in xs if x is not None]

    # Per-image records, when every cell has one on the same images.
    hits: dict[tuple[int, float | None, int], np.ndarray] = {}
    images: dict[str, Any] | None = None
    paired = True
    for (i, x), rows in cells.items():
        for s in seeds:
            row = rows[rows["seed"] == s].iloc[0]
            got = stats.hits_of(exp_dir, row)
            if got is None:
                paired = False
                break
            h, desc = got
            if images is None:
                images = desc
            elif desc != images:
                paired = False
                f.note = "terms were evaluated on different test images: unpaired"
                break
            hits[(i, x, s)] = h
        if not paired:
            break
    if paired:
        n = len(next(iter(hits.values())))
        e = np.zeros((len(seeds), n))
        for si, s in enumerate(seeds):
            for x in xs:
                for i, t in enumerate(claim.terms):
                    e[si] += t.weight * hits[(i, x, s)]
            e[si] /= len(xs)
        f.n_images = n
        two = len(claim.terms) == 2 and len(xs) == 1 and sorted(t.weight for t in claim.terms) == [-1.0, 1.0]
        if two and len(seeds) == 1:
            pos = 0 if claim.terms[0].weight > 0 else 1
            a, b = hits[(pos, xs[0], seeds[0])], hits[(1 - pos, xs[0], seeds[0])]
            c = stats.paired_difference(a, b)
            f.effect, f.low, f.high, f.method, f.p_value = c.difference, c.low, c.high, c.method, c.p_value
        else:
            f.effect, f.low, f.high = stats.bootstrap_mean(e)
            f.method = (f"paired bootstrap over {len(seeds)} seed(s) and {n} images"
                        f"{f', mean over {len(xs)} target eccentricities' if len(xs) > 1 else ''}")
        return f

    # Fallback: counts only (no per-image record): an unpaired normal interval on the pooled accuracies.
    effect, var, n_min = 0.0, 0.0, None
    for (i, _x), rows in cells.items():
        rows = rows[rows["seed"].isin(seeds)]
        k, n = float(rows["n_correct"].sum()), float(rows["n_images"].sum())
        p = k / n
        w = claim.terms[i].weight / len(xs)
        effect += w * p
        var += w * w * p * (1 - p) / n
        n_min = int(n) if n_min is None else min(n_min, int(n))
    half = stats.Z95 * math.sqrt(var)
    f.effect, f.low, f.high = effect, effect - half, effect + half
    f.n_images = n_min or 0
    f.method = "unpaired normal interval on pooled counts (no per-image record)"
    return f


def configurations(table: pd.DataFrame) -> list[tuple[str, float]]:
    """The evaluated (model, learning rate) pairs of a results table, in table order."""
    rows = table[(table["model_hash"] != "") & table["flanker_type"].notna()]
    return list(dict.fromkeys(zip(rows["model"], rows["learning_rate"].astype(float), strict=True)))


def findings(exp_dir: str | Path, table: pd.DataFrame, claims: Sequence[Claim]) -> pd.DataFrame:
    """Every claim on every configuration it applies to: one row each (FINDINGS_COLUMNS)."""
    rows = []
    for claim in claims:
        for model, lr in configurations(table):
            if claim.models and model not in claim.models:
                continue
            try:
                rows.append(evaluate_claim(exp_dir, table, claim, model, lr).row())
            except Exception as e:  # one claim never costs the report
                logger.exception("claim %s on %s failed", claim.name, model)
                rows.append(Finding(claim, model, lr, note=f"{type(e).__name__}: {e}").row())
    return pd.DataFrame(rows, columns=list(FINDINGS_COLUMNS))


def _pp(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:+.1f}"


def markdown(df: pd.DataFrame, experiment: str = "") -> str:
    """findings.md: one table of the measured effects, then each claim's statement and measure."""
    lines = [f"# Findings{f': {experiment}' if experiment else ''}", "",
             "Each claim is a measured effect (accuracy difference, in percentage points) with its 95% "
             "interval. Verdict: supported (interval above 0), contradicted (below 0), inconclusive "
             "(contains 0). Effects are paired: the same test images in every condition.", ""]
    if df.empty:
        return "\n".join([*lines, "No claim could be tested (the sweep declares none, or nothing was evaluated).", ""])
    lines += ["| claim | model | lr | effect (pp) | 95% interval (pp) | verdict | seeds | images | method |",
              "|---|---|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        interval = f"{_pp(r['ci_low'])} to {_pp(r['ci_high'])}"
        method = r["method"] + (f"; McNemar p = {r['p_value']:.3g}" if math.isfinite(r["p_value"]) else "")
        method += f" ({r['note']})" if r["note"] else ""
        lines.append(f"| {r['claim']} | {r['model']} | {r['learning_rate']:g} | {_pp(r['effect'])} | {interval} "
                     f"| **{r['verdict']}** | {r['seeds'] or '-'} | {r['n_images']} | {method} |")
    lines += ["", "## Claims", ""]
    for name, g in df.groupby("claim", sort=False):
        r = g.iloc[0]
        lines += [f"- **{name}**: {r['statement']}", f"  Effect: {r['measure']}; at target eccentricities "
                  f"{r['target_eccs'] or 'fixed'}.", ""]
    return "\n".join(lines)


def write(exp_dir: str | Path, table: pd.DataFrame, claims: Sequence[Claim], experiment: str = "") -> list[Path]:
    """findings.md and findings.csv in the experiment folder (atomically); returns the paths."""
    exp_dir = Path(exp_dir)
    df = findings(exp_dir, table, claims)
    return [atomic_write_bytes(exp_dir / FINDINGS_MD, markdown(df, experiment).encode()),
            atomic_write_bytes(exp_dir / FINDINGS_CSV, df.to_csv(index=False).encode())]


def demo_claims(spacing: float, center: float, far: float) -> tuple[Claim, ...]:
    """The demo's claims (ORIGINAL.md "Paper findings"), at its closest spacing and fixed targets."""
    return (
        Claim("crowding",
              "Flankers lower the accuracy of a network trained on isolated targets (crowding).",
              (Term("a"), Term("xax", spacing, weight=-1)),
              measure=f"accuracy without flankers minus with two flankers at spacing {spacing:g}, mean over "
                      "target eccentricities"),
        Claim("robust at the centre",
              "The eccentricity-dependent model is more robust to flankers when the target is at the centre "
              "than away from it.",
              (Term("a", target_ecc=far), Term("xax", spacing, weight=-1, target_ecc=far),
               Term("a", weight=-1, target_ecc=center), Term("xax", spacing, target_ecc=center)),
              measure=f"the drop a - xax (spacing {spacing:g}) at target {far:g} minus the drop at target {center:g}"),
        Claim("inner flanker worse",
              "A flanker between the target and the centre (xa) crowds more than one farther out (ax).",
              (Term("ax", spacing), Term("xa", spacing, weight=-1)),
              measure=f"accuracy with the outer flanker (ax) minus with the inner one (xa) at spacing {spacing:g}, "
                      "mean over target eccentricities"),
    )
