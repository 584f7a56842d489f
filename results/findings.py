"""Claims an experiment tests, measured as effects with 95% intervals and verdicts: findings.md / .csv.

A sweep declares its claims (`SweepSpec.claims`) next to its figures, as data: a Claim is a
weighted sum of accuracies of a few conditions (Terms), averaged over target eccentricities, whose
sign the paper predicts. The claim holds when the effect is positive:

    effect = mean over x of  sum_k weight_k * accuracy(term_k at target eccentricity x)

where x runs over the claim's target eccentricities (default: every one at which all its terms were
evaluated), and a term with its own target_ecc ignores x. Only the positions where the effect can
be seen count (results.visibility: every network's isolated target clearly above chance, a
baseline of a gain clearly below ceiling); with none left the verdict is "not testable here", with
the reason. Otherwise, from the 95% interval: supported (above 0), contradicted (below 0),
inconclusive (it contains 0).

What a verdict speaks about (results.intervals): with one seed, the one trained network (the
verdict says so: seed variation is not estimated); with several, the architecture, seeds and test
images being crossed random effects. The effect is computed image by image from the per-image
records (every term is evaluated on the same test images, by ecc.evaluate's record): per seed s and
image i, e_s(i) = mean_x sum_k w_k hit_k(x, s, i); the effect is the mean of e over seeds and
images, and findings.md shows each seed's mean beside it. Interval: two conditions with one seed,
Newcombe's paired interval (and the exact McNemar p); other claims with one seed, the t interval
over images; several seeds, `intervals.crossed_interval`. Evaluations without a per-image record
(older experiment folders) fall back to the counts (`intervals.seed_counts_interval`, each distinct
evaluation counted once however many x it serves), and say so.

A report tests a family of claims x configurations: each finding also gets its Holm-adjusted p
value over the family and a family-wise verdict (supported / contradicted when the Holm p < 0.05).

Each sweep declares its claims (sweeps/claims.py has the shared ones), e.g. a DCNN vs the eccentricity
model at the centre:
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
from core.layout import FINDINGS_CSV, FINDINGS_MD
from ecc.conditions import ECC_ATOL, evaluated

from . import bouma, bouma_report, intervals, stats, visibility
from .findings_md import markdown
from .table import selection_table

logger = logging.getLogger(__name__)

NOT_TESTABLE = "not testable here"
FINDINGS_COLUMNS = ("claim", "model", "learning_rate", "effect", "ci_low", "ci_high", "verdict", "scope",
                    "p_value", "p_holm", "family_verdict", "family_size", "method", "seeds", "seed_effects",
                    "n_images", "target_eccs", "statement", "measure", "note")


@dataclass(frozen=True)
class Term:
    """One condition of a claim: its label (a, xa, ax, xax), spacing (flanked labels) and weight."""

    label: str
    spacing: float | None = None      # |flanker_ecc - target_ecc|; None for "a"
    weight: float = 1.0
    target_ecc: float | None = None   # None: the claim's running target eccentricity x
    flanker_dset: str = "MNIST"
    model: str | None = None          # None: the model the claim is being tested on
    baseline: bool = False            # a gain is measured over it: it must not be at ceiling (results.visibility)

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
        dset = "" if self.flanker_dset == "MNIST" else f", {self.flanker_dset}"
        base = " [baseline]" if self.baseline else ""
        return f"{self.label}(target {at}{sp}{dset}){who}{base}"


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
    p_value: float = math.nan  # exact McNemar (Newcombe's interval), else the t test of the interval
    note: str = ""
    seed_effects: list[float] = field(default_factory=list)  # the effect of each seed (each network)
    p_holm: float = math.nan    # Holm-adjusted over the report's family (`findings`)
    family_size: int = 0
    testable: bool = True       # False: no position passes results.visibility's rule (note: why)

    @property
    def verdict(self) -> str:
        if not self.testable:
            return NOT_TESTABLE
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return "inconclusive"
        return "supported" if self.low > 0 else "contradicted" if self.high < 0 else "inconclusive"

    @property
    def family_verdict(self) -> str:
        """The verdict with the family's multiplicity accounted for (Holm p < 0.05)."""
        if not self.testable:
            return NOT_TESTABLE
        if not (math.isfinite(self.p_holm) and self.p_holm < intervals.ALPHA):
            return "inconclusive"
        return "supported" if self.effect > 0 else "contradicted"

    @property
    def scope(self) -> str:
        """What the verdict speaks about: one trained network, or the architecture across seeds."""
        return "" if not self.seeds else "this network" if len(self.seeds) == 1 else "architecture"

    def row(self) -> dict[str, Any]:
        return {"claim": self.claim.name, "model": self.model, "learning_rate": self.learning_rate,
                "effect": self.effect, "ci_low": self.low, "ci_high": self.high, "verdict": self.verdict,
                "scope": self.scope, "p_value": self.p_value, "p_holm": self.p_holm,
                "family_verdict": self.family_verdict, "family_size": self.family_size, "method": self.method,
                "seeds": ",".join(map(str, self.seeds)), "seed_effects": ",".join(f"{v:.6g}" for v in self.seed_effects),
                "n_images": self.n_images, "target_eccs": ",".join(f"{x:g}" for x in self.target_eccs),
                "statement": self.claim.statement, "measure": self.claim.measure or self.claim.formula(),
                "note": self.note}


# ----------------------------------------------------------------------------- evaluating a claim
def _term_rows(rows: pd.DataFrame, term: Term) -> pd.DataFrame:
    """The done rows of a term's label (and spacing and flanker set), at any target eccentricity."""
    m = (rows["label"] == term.label) & (rows["state"] == "done")
    if term.spacing is not None:
        m &= np.isclose(rows["spacing"].to_numpy(float), term.spacing, atol=ECC_ATOL)
        m &= rows["flanker_dset"] == term.flanker_dset
    return rows[m]


def _matches(rows: pd.DataFrame, term: Term, x: float | None) -> pd.DataFrame:
    te = term.target_ecc if term.target_ecc is not None else x
    return rows[np.isclose(rows["target_ecc"].to_numpy(float), float(te), atol=ECC_ATOL)]


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


def _config_rows(table: pd.DataFrame, term: Term, model: str, learning_rate: float) -> pd.DataFrame:
    """The rows of the network a term reads: the claim's configuration, or the term's own model at
    the claim's learning rate (or its only one); a model with several, none the claim's, is refused."""
    name = term.model or model
    rows = table[table["model"] == name]
    lrs = sorted(set(rows["learning_rate"].astype(float)))
    if term.model is not None and len(lrs) <= 1:
        return rows
    same = rows[np.isclose(rows["learning_rate"].to_numpy(float), learning_rate)]
    if same.empty and term.model is not None:
        raise ValueError(f"term {term.describe()}: model {name!r} was evaluated at learning rates "
                         f"{', '.join(f'{lr:g}' for lr in lrs)} (selection `all`), none is the claim's "
                         f"{learning_rate:g}; select one learning rate per model (val/acc or train/loss)")
    return same


def _seed_rows(cells: dict[tuple[int, float | None], pd.DataFrame], seeds: list[int]) -> dict[tuple, pd.Series]:
    out = {}
    for (i, x), rows in cells.items():
        for s in seeds:
            got = rows[rows["seed"] == s]
            if len(got) > 1:
                raise ValueError(f"term {i} at target {x} has {len(got)} evaluations for seed {s}: "
                                 f"{', '.join(got['run_dir'])}")
            out[(i, x, s)] = got.iloc[0]
    return out


def _paired(f: Finding, exp_dir: str | Path, claim: Claim, xs: list, rows: dict[tuple, pd.Series]) -> bool:
    """The effect from the per-image records, when every cell has one on the same images."""
    hits: dict[tuple, np.ndarray] = {}
    images: dict[str, Any] | None = None
    for key, row in rows.items():
        got = stats.hits_of(exp_dir, row)
        if got is None:
            return False
        h, desc = got
        if images is not None and desc != images:
            f.note = "terms were evaluated on different test images: unpaired"
            return False
        images, hits[key] = desc, h
    seeds, n = f.seeds, len(next(iter(hits.values())))
    e = np.zeros((len(seeds), n))
    for si, s in enumerate(seeds):
        for x in xs:
            for i, t in enumerate(claim.terms):
                e[si] += t.weight * hits[(i, x, s)]
        e[si] /= len(xs)
    f.n_images, f.seed_effects = n, [float(v) for v in e.mean(axis=1)]
    two = len(claim.terms) == 2 and len(xs) == 1 and sorted(t.weight for t in claim.terms) == [-1.0, 1.0]
    if two and len(seeds) == 1:
        pos = 0 if claim.terms[0].weight > 0 else 1
        c = stats.paired_difference(hits[(pos, xs[0], seeds[0])], hits[(1 - pos, xs[0], seeds[0])])
        f.effect, f.low, f.high, f.method, f.p_value = c.difference, c.low, c.high, c.method, c.p_value
        return True
    ci = intervals.crossed_interval(e)
    f.effect, f.low, f.high, f.p_value = ci.estimate, ci.low, ci.high, ci.p_value
    f.method = f"{ci.method}{f', mean over {len(xs)} target eccentricities' if len(xs) > 1 else ''}"
    return True


def _counts(f: Finding, claim: Claim, xs: list, rows: dict[tuple, pd.Series]) -> None:
    """The effect from the counts (no per-image record): per seed, the weighted accuracies; each
    distinct evaluation's binomial variance once, with the summed weight of every cell it serves."""
    values, variances = [], []
    for s in f.seeds:
        weight: dict[str, float] = {}
        acc: dict[str, tuple[float, float]] = {}
        for (i, _x, seed), row in rows.items():
            if seed == s:
                key = str(row["run_dir"]) or f"{i}-{_x}"
                weight[key] = weight.get(key, 0.0) + claim.terms[i].weight / len(xs)
                acc[key] = (float(row["n_correct"]), float(row["n_images"]))
        values.append(sum(w * acc[k][0] / acc[k][1] for k, w in weight.items()))
        variances.append(sum(w * w * (k / n) * (1 - k / n) / n for key, w in weight.items()
                             for k, n in [acc[key]]))
    ci = intervals.seed_counts_interval(values, variances)
    f.effect, f.low, f.high, f.p_value = ci.estimate, ci.low, ci.high, ci.p_value
    f.seed_effects, f.n_images = [float(v) for v in values], int(min(float(r["n_images"]) for r in rows.values()))
    f.method = f"{ci.method} (no per-image record)"


def _check(claim: Claim, model: str, configs: Sequence[pd.DataFrame], cells: dict[tuple, pd.DataFrame],
           x: float | None, seeds: list[int]) -> visibility.Check:
    """results.visibility's rule at one position x, for every term (at its own position)."""
    for i, t in enumerate(claim.terms):
        at = float(t.target_ecc if t.target_ecc is not None else x)
        name = t.model or model
        reason = visibility.floor_reason(configs[i], name, at, seeds)
        if reason is None and t.baseline:
            sp = "" if t.spacing is None else f" at spacing {t.spacing:g}"
            reason = visibility.ceiling_reason(cells[(i, x)], f"{t.label}{sp} of {name} at target {at:g}", seeds)
        if reason:
            return visibility.Check(x, reason)
    return visibility.Check(x, None)


def _not_testable(f: Finding, reason: str) -> Finding:
    f.testable, f.note = False, reason
    return f


def evaluate_claim(exp_dir: str | Path, table: pd.DataFrame, claim: Claim, model: str,
                   learning_rate: float) -> Finding:
    """The effect of one claim on one configuration (model, learning rate) of a results table, at
    the positions where it can be seen (results.visibility); not testable where none can."""
    f = Finding(claim, model, learning_rate)
    table = evaluated(table)
    table = table.assign(seed=stats._seed_column(table))
    configs = [_config_rows(table, t, model, learning_rate) for t in claim.terms]
    pools = [_term_rows(c, t) for c, t in zip(configs, claim.terms, strict=True)]
    xs = _x_values(claim, pools)
    if not xs:
        return _not_testable(f, "too few conditions: no target eccentricity at which every term was evaluated")
    cells = {(i, x): _matches(p, t, x) for i, (p, t) in enumerate(zip(pools, claim.terms, strict=True)) for x in xs}
    seeds = None
    for rows in cells.values():
        have = set(rows["seed"])
        seeds = have if seeds is None else seeds & have
    seeds = sorted(seeds or [])
    if not seeds:
        return _not_testable(f, "too few conditions: no seed for which every term was evaluated")
    checks = [_check(claim, model, configs, cells, x, seeds) for x in xs]
    kept = [c.x for c in checks if c.reason is None]
    f.seeds = seeds
    if not kept:
        return _not_testable(f, visibility.summarise(checks))
    if len(kept) < len(xs):
        left = [c for c in checks if c.reason]
        f.note = (f"left out target(s) {', '.join(f'{c.x:g}' for c in left if c.x is not None)}: "
                  f"{visibility.summarise(left)}")
    xs, f.target_eccs = kept, [x for x in kept if x is not None]
    rows = _seed_rows({k: v for k, v in cells.items() if k[1] in kept}, seeds)
    note = f.note
    if not _paired(f, exp_dir, claim, xs, rows):
        _counts(f, claim, xs, rows)
    if note and f.note != note:
        f.note = f"{note}; {f.note}"
    return f


def findings(exp_dir: str | Path, table: pd.DataFrame, claims: Sequence[Claim]) -> pd.DataFrame:
    """Every claim on every configuration it applies to: one row each (FINDINGS_COLUMNS), with the
    Holm-adjusted p value and the family-wise verdict over the findings that have a p value."""
    found = []
    for claim in claims:
        for model, lr in stats.configurations(table):
            if claim.models and model not in claim.models:
                continue
            try:
                found.append(evaluate_claim(exp_dir, table, claim, model, lr))
            except Exception as e:  # one claim never costs the report
                logger.exception("claim %s on %s failed", claim.name, model)
                found.append(Finding(claim, model, lr, note=f"{type(e).__name__}: {e}"))
    adjusted = intervals.holm([f.p_value for f in found])
    size = int(np.isfinite(adjusted).sum())
    for f, p in zip(found, adjusted, strict=True):
        f.p_holm, f.family_size = float(p), size
    return pd.DataFrame([f.row() for f in found], columns=list(FINDINGS_COLUMNS))


def diverged_lines(exp_dir: str | Path) -> list[str]:
    """One line per training whose final val/acc fell far below its best (results.table.diverged)."""
    try:
        sel = selection_table(exp_dir)
    except Exception as e:  # the findings never fail on the selection's account
        logger.warning("no divergence check: %s", e)
        return []
    return [f"{r['model']} lr {r['learning_rate']:g} seed {r['seed']}: final val/acc {r['val/acc']:.3f}, best "
            f"{r['best_val/acc']:.3f}{' (selected: its findings use these final weights)' if r['chosen'] else ''}"
            for _, r in sel[sel["diverged"]].iterrows()]


def write(exp_dir: str | Path, table: pd.DataFrame, claims: Sequence[Claim], experiment: str = "",
          fits: Sequence[bouma.BoumaFit] | None = None) -> list[Path]:
    """findings.md and findings.csv in the experiment folder (atomically); returns the paths.
    findings.md ends with Bouma's law per network (`fits`, default results.bouma.fits of the table)."""
    exp_dir = Path(exp_dir)
    df = findings(exp_dir, table, claims)
    fits = bouma.fits(exp_dir, table) if fits is None else fits
    text = markdown(df, experiment, diverged_lines(exp_dir), bouma_report.markdown(fits))
    return [atomic_write_bytes(exp_dir / FINDINGS_MD, text.encode()),
            atomic_write_bytes(exp_dir / FINDINGS_CSV, df.to_csv(index=False).encode())]

