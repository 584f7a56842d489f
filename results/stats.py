"""Statistics of an experiment's accuracies: the summary over seeds (summary.csv), the table the
figures draw, paired comparisons, and the per-image records they read. The intervals themselves and
what each one speaks about (one network, or the architecture across seeds): results.intervals.

  summary.csv   per configuration x condition: the mean accuracy over seeds and its interval; one
                seed: that network's Wilson interval; several: the t interval over the seeds'
                accuracies widened by the test set's binomial variance (the seeds share one test set,
                so its images are not counted S times as independent: intervals.seed_counts_interval);
  paired        two evaluations on the same test images (another condition, another model), image
                by image from the per-image records (core.hits, core.layout.HITS): one seed, Newcombe's paired
                score interval and the exact McNemar test; several, seeds x images crossed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.atomic import CorruptFileError, atomic_write, atomic_write_bytes, read_json
from core.hits import read_hits
from core.layout import RESULT, SUMMARY_CSV, SUMMARY_PARQUET
from ecc.conditions import evaluated

from .intervals import (
    Z95,
    Interval,
    crossed_interval,
    mcnemar_exact,
    newcombe_paired,
    seed_counts_interval,
    t_interval,
    wilson_interval,
)

__all__ = ["Z95", "Comparison", "accuracy_interval", "configurations", "crossed_interval", "figure_table", "hits_of",
           "mcnemar_exact", "newcombe_paired", "paired_difference", "save_summary", "several_seeds",
           "summary_table", "t_interval", "wilson_interval"]

CONDITION_KEYS = ("flanker_type", "label", "target_ecc", "flanker_ecc", "spacing", "flanker_dset")
GROUP_KEYS = ("experiment", "model", "learning_rate")  # one configuration; its seeds are replicates
SUMMARY_COLUMNS = (*GROUP_KEYS, *CONDITION_KEYS, "seeds_planned", "seeds_done", "seeds", "mean_accuracy",
                   "sd_accuracy", "ci_low", "ci_high", "interval", "n_images", "n_correct", "pooled_accuracy")


# ----------------------------------------------------------------------------- a condition over seeds
def accuracy_interval(n_correct: Any, n_images: Any) -> Interval:
    """A condition's mean accuracy over seeds (one count per seed, every seed on the same test
    images) with its 95% interval, cut to [0, 1]. One seed: the Wilson interval of that network.
    Several: results.intervals.seed_counts_interval of the seeds' accuracies."""
    k, n = np.asarray(n_correct, dtype=float), np.asarray(n_images, dtype=float)
    ok = np.isfinite(k) & np.isfinite(n) & (n > 0)
    k, n = k[ok], n[ok]
    if len(k) == 0:
        return Interval(math.nan, math.nan, math.nan)
    if len(k) == 1:
        (lo,), (hi,) = wilson_interval(k[0], n[0])
        return Interval(float(k[0] / n[0]), float(lo), float(hi), method="Wilson (this network)")
    p = k / n
    i = seed_counts_interval(p, p * (1 - p) / n)
    return Interval(i.estimate, max(0.0, i.low), min(1.0, i.high), i.se, i.df,
                    f"t over {len(k)} seeds + shared test set")


def _seed_column(table: pd.DataFrame) -> pd.Series:
    if "seed" in table.columns:
        return pd.to_numeric(table["seed"], errors="coerce").fillna(0).astype(int)
    return pd.Series(0, index=table.index)


def _group_keys(table: pd.DataFrame) -> list[str]:
    return [k for k in (*GROUP_KEYS, *CONDITION_KEYS) if k in table.columns]


def _done_interval(g: pd.DataFrame) -> tuple[pd.DataFrame, Interval]:
    done = g[g["state"] == "done"]
    k = pd.to_numeric(done["n_correct"], errors="coerce").astype(float).to_numpy()
    n = pd.to_numeric(done["n_images"], errors="coerce").astype(float).to_numpy()
    return done, accuracy_interval(k, n)


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (model, learning rate) x condition from a results table
    (results.table.collect), over its done seeds: the mean accuracy, its interval (`accuracy_interval`,
    named in `interval`), the pooled counts. Rows without an evaluation (no_model) are left out."""
    rows = evaluated(table).copy()
    if rows.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    rows["seed"] = _seed_column(rows)
    keys = _group_keys(rows)
    out = []
    for key, g in rows.groupby(keys, dropna=False, sort=False):
        done, ci = _done_interval(g)
        n = int(done["n_images"].sum()) if len(done) else 0
        k = int(done["n_correct"].sum()) if len(done) else 0
        rec = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        rec.update(seeds_planned=int(g["seed"].nunique()), seeds_done=int(done["seed"].nunique()),
                   seeds=",".join(str(s) for s in sorted(done["seed"].unique())),
                   mean_accuracy=float(done["accuracy"].mean()) if len(done) else math.nan,
                   sd_accuracy=float(done["accuracy"].std(ddof=1)) if len(done) > 1 else math.nan,
                   ci_low=ci.low, ci_high=ci.high, interval=ci.method, n_images=n if len(done) else None,
                   n_correct=k if len(done) else None, pooled_accuracy=k / n if n else math.nan)
        out.append(rec)
    df = pd.DataFrame(out)
    for col in ("n_images", "n_correct", "flanker_type"):
        if col in df.columns:
            df[col] = pd.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)
                                for v in df[col]], dtype="Int64")
    df = df[[c for c in SUMMARY_COLUMNS if c in df.columns]]
    sort = [c for c in ("model", "learning_rate", "flanker_dset", "flanker_type", "target_ecc", "flanker_ecc")
            if c in df.columns]
    return df.sort_values(sort, na_position="last", kind="stable").reset_index(drop=True)


def save_summary(exp_dir: str | Path, summary: pd.DataFrame) -> list[Path]:
    """summary.parquet and summary.csv, atomically, in the experiment folder."""
    exp_dir = Path(exp_dir)
    return [atomic_write(exp_dir / SUMMARY_PARQUET, lambda f: summary.to_parquet(f, index=False)),
            atomic_write_bytes(exp_dir / SUMMARY_CSV, summary.to_csv(index=False).encode())]


def several_seeds(table: pd.DataFrame) -> bool:
    """Whether some configuration of the table was evaluated with more than one seed."""
    rows = table[table["model_hash"] != ""]
    if rows.empty:
        return False
    seeds = rows.assign(seed=_seed_column(rows)).groupby(["model", "learning_rate"], dropna=False)["seed"]
    return bool((seeds.nunique() > 1).any())


def configurations(table: pd.DataFrame) -> list[tuple[str, float]]:
    """The evaluated (model, learning rate) pairs of a results table, in table order."""
    rows = table[(table["model_hash"] != "") & table["flanker_type"].notna()]
    return list(dict.fromkeys(zip(rows["model"], rows["learning_rate"].astype(float), strict=True)))


def figure_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table the figures draw: as is with one seed per configuration; with several, one row per
    configuration x condition whose accuracy is the mean over seeds and whose ci_low / ci_high are
    summary.csv's interval (`accuracy_interval`), model_hash the seeds' hashes joined by '+', state
    'done' only when every seed is done."""
    if not several_seeds(table):
        return table
    evaluated_rows = evaluated(table).copy()
    rest = table.drop(evaluated_rows.index)
    evaluated_rows["seed"] = _seed_column(evaluated_rows)
    hashes = evaluated_rows.groupby(["model", "learning_rate"], dropna=False)["model_hash"].agg(
        lambda h: "+".join(sorted(set(h))))
    out = []
    for _, g in evaluated_rows.groupby(_group_keys(evaluated_rows), dropna=False, sort=False):
        first = g.iloc[0].copy()
        done, ci = _done_interval(g)
        first["accuracy"] = float(done["accuracy"].mean()) if len(done) else math.nan
        first["ci_low"], first["ci_high"] = ci.low, ci.high
        first["model_hash"] = hashes[(first["model"], first["learning_rate"])]
        if len(done) < len(g):
            first["state"] = next(s for s in g["state"] if s != "done")
        first["n_images"] = done["n_images"].sum() if len(done) else pd.NA
        first["n_correct"] = done["n_correct"].sum() if len(done) else pd.NA
        out.append(first)
    agg = pd.DataFrame(out)
    return pd.concat([agg, rest], ignore_index=True) if len(rest) else agg.reset_index(drop=True)


# ----------------------------------------------------------------------------- paired comparisons
@dataclass(frozen=True)
class Comparison:
    """A paired difference of accuracies (A - B) with its 95% interval."""

    difference: float
    low: float
    high: float
    method: str
    n_images: int
    n_seeds: int
    p_value: float = math.nan  # exact McNemar (one seed), else the t test of the interval
    a_only: int = -1  # images A got right and B wrong (one seed)
    b_only: int = -1  # images B got right and A wrong (one seed)


def paired_difference(a: np.ndarray, b: np.ndarray) -> Comparison:
    """Accuracy of A minus accuracy of B, on the same images (bool arrays: images, or seeds x images,
    seed i of A paired with seed i of B). One seed: Newcombe's interval and the exact McNemar test
    (this network); several: seeds x images crossed (`crossed_interval`, the architecture)."""
    a, b = np.atleast_2d(np.asarray(a, dtype=bool)), np.atleast_2d(np.asarray(b, dtype=bool))
    if a.shape != b.shape:
        raise ValueError(f"paired records must have the same shape (seeds x images): {a.shape} vs {b.shape}")
    s, n = a.shape
    if s == 1:
        both, a_only = int((a & b).sum()), int((a & ~b).sum())
        b_only, neither = int((~a & b).sum()), int((~a & ~b).sum())
        diff, lo, hi = newcombe_paired(both, a_only, b_only, neither)
        return Comparison(diff, lo, hi, "Newcombe paired score interval, exact McNemar", n, 1,
                          mcnemar_exact(a_only, b_only), a_only, b_only)
    c = crossed_interval(a.astype(float) - b.astype(float))
    return Comparison(c.estimate, c.low, c.high, c.method, n, s, c.p_value)


# ----------------------------------------------------------------------------- per-image records
def hits_of(exp_dir: str | Path, row: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The per-image record of one done row of the results table (bool array) and the description
    of its test images; None when the evaluation kept none (results written before the record)."""
    run_dir = Path(exp_dir) / str(row["run_dir"])
    try:
        result = read_json(run_dir / RESULT) or {}
    except CorruptFileError:
        return None
    per_image = result.get("per_image")
    if not isinstance(per_image, Mapping) or not per_image.get("file"):
        return None
    try:
        hits = read_hits(run_dir / str(per_image["file"]), int(per_image["n"]))
    except (FileNotFoundError, CorruptFileError):
        return None
    return hits, dict(per_image.get("test_images") or {})
