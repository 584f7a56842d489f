"""Statistics of accuracies: the Wilson interval of one proportion, the summary over seeds, paired comparisons.

Three kinds of uncertainty, kept apart:
  across seeds   mean accuracy of the replicates (seeds) and a t interval over them
                 (mean +- t(0.975, S-1) * sd / sqrt(S), cut to [0, 1]); NaN with one seed;
  pooled counts  every seed's test images pooled (sum of n_correct over sum of n_images) with its
                 Wilson interval: the binomial noise of the test set, not the seed-to-seed variation;
  paired         two evaluations on the same test images (another condition, another model),
                 image by image from the per-image records (ecc.evaluate.HITS): with one seed, the
                 difference of the two accuracies with Newcombe's score interval for paired
                 proportions (his method 10, Stat. Med. 1998) and the exact McNemar test (binomial
                 test on the discordant images, scipy); with several seeds, a bootstrap that
                 resamples seeds and images (the same images in every seed and condition, so the
                 pairing is kept). Resampling both levels is conservative (a seed's mean already
                 holds its images' noise): with few seeds the interval errs wide, not narrow.
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
from ecc.evaluate import read_hits

SUMMARY_PARQUET, SUMMARY_CSV = "summary.parquet", "summary.csv"
Z95 = 1.959963984540054  # two-sided 95% normal quantile
BOOTSTRAP_SAMPLES = 4000
BOOTSTRAP_SEED = 0  # fixed: a report is redrawn with the same intervals
CONDITION_KEYS = ("flanker_type", "label", "target_ecc", "flanker_ecc", "spacing", "flanker_dset")
GROUP_KEYS = ("experiment", "model", "learning_rate")  # one configuration; its seeds are replicates
SUMMARY_COLUMNS = (*GROUP_KEYS, *CONDITION_KEYS, "seeds_planned", "seeds_done", "seeds", "mean_accuracy",
                   "sd_accuracy", "seed_ci_low", "seed_ci_high", "n_images", "n_correct", "pooled_accuracy",
                   "ci_low", "ci_high")


# ----------------------------------------------------------------------------- one proportion
def wilson_interval(n_correct: Any, n_images: Any, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion k/n (no continuity correction).

    centre = (p + z^2/2n) / (1 + z^2/n), half width = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2).
    Vectorised; NaN where n is missing or 0."""
    k = np.asarray(pd.to_numeric(pd.Series(np.atleast_1d(n_correct)), errors="coerce"), dtype=float)
    n = np.asarray(pd.to_numeric(pd.Series(np.atleast_1d(n_images)), errors="coerce"), dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.where(n > 0, n, np.nan)
        p = k / n
        z2 = z * z
        denom = 1 + z2 / n
        centre = (p + z2 / (2 * n)) / denom
        half = z / denom * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
        lo, hi = np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)
    # Exact ends (the formula gives them up to rounding): k = 0 -> low 0, k = n -> high 1.
    lo, hi = np.where(k == 0, 0.0, lo), np.where(k == n, 1.0, hi)
    return lo, hi


# ----------------------------------------------------------------------------- across seeds
def t_interval(values: Any, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean of replicate values (NaNs dropped);
    low = high = NaN with fewer than two values."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    from scipy import stats as sps  # here: scipy.stats takes a second to import, and launches need none

    half = float(sps.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def _clipped(interval: tuple[float, float, float]) -> tuple[float, float, float]:
    """An accuracy's t interval cut to [0, 1] (the t approximation can step outside)."""
    mean, lo, hi = interval
    return mean, max(0.0, lo) if math.isfinite(lo) else lo, min(1.0, hi) if math.isfinite(hi) else hi


def _seed_column(table: pd.DataFrame) -> pd.Series:
    if "seed" in table.columns:
        return pd.to_numeric(table["seed"], errors="coerce").fillna(0).astype(int)
    return pd.Series(0, index=table.index)


def _group_keys(table: pd.DataFrame) -> list[str]:
    return [k for k in (*GROUP_KEYS, *CONDITION_KEYS) if k in table.columns]


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (model, learning rate) x condition from a results table
    (results.table.collect), over its seeds: mean accuracy and the t interval across seeds, and the
    pooled counts with their Wilson interval. Rows without an evaluation (no_model) are left out."""
    rows = table[(table["model_hash"] != "") & table["flanker_type"].notna()].copy()
    if rows.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    rows["seed"] = _seed_column(rows)
    keys = _group_keys(rows)
    out = []
    for key, g in rows.groupby(keys, dropna=False, sort=False):
        done = g[g["state"] == "done"]
        mean, lo, hi = _clipped(t_interval(done["accuracy"]))
        n = int(done["n_images"].sum()) if len(done) else 0
        k = int(done["n_correct"].sum()) if len(done) else 0
        rec = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        rec.update(seeds_planned=int(g["seed"].nunique()), seeds_done=int(done["seed"].nunique()),
                   seeds=",".join(str(s) for s in sorted(done["seed"].unique())), mean_accuracy=mean,
                   sd_accuracy=float(done["accuracy"].std(ddof=1)) if len(done) > 1 else math.nan,
                   seed_ci_low=lo, seed_ci_high=hi, n_images=n if len(done) else None,
                   n_correct=k if len(done) else None, pooled_accuracy=k / n if n else math.nan)
        out.append(rec)
    df = pd.DataFrame(out)
    lo, hi = wilson_interval(pd.to_numeric(df["n_correct"], errors="coerce").to_numpy(float),
                                 pd.to_numeric(df["n_images"], errors="coerce").to_numpy(float))
    df["ci_low"], df["ci_high"] = lo, hi
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


def figure_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table the figures draw: as is with one seed per configuration; with several, one row per
    configuration x condition whose accuracy is the mean over seeds and whose ci_low / ci_high are
    the t interval across seeds (clipped to [0, 1]), model_hash the seeds' hashes joined by '+',
    state 'done' only when every seed is done."""
    if not several_seeds(table):
        return table
    evaluated = table[(table["model_hash"] != "") & table["flanker_type"].notna()].copy()
    rest = table.drop(evaluated.index)
    evaluated["seed"] = _seed_column(evaluated)
    hashes = evaluated.groupby(["model", "learning_rate"], dropna=False)["model_hash"].agg(
        lambda h: "+".join(sorted(set(h))))
    out = []
    for _, g in evaluated.groupby(_group_keys(evaluated), dropna=False, sort=False):
        first = g.iloc[0].copy()
        done = g[g["state"] == "done"]
        first["accuracy"], first["ci_low"], first["ci_high"] = _clipped(t_interval(done["accuracy"]))
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
    p_value: float = math.nan  # exact McNemar (one seed)
    a_only: int = -1  # images A got right and B wrong (one seed)
    b_only: int = -1  # images B got right and A wrong (one seed)


def newcombe_paired(both: int, a_only: int, b_only: int, neither: int, z: float = Z95) -> tuple[float, float, float]:
    """(p_A - p_B, low, high): Newcombe's score interval for the difference of two paired proportions
    (method 10 of Newcombe 1998, from the Wilson intervals of each proportion and the phi correlation
    of the 2x2 table). p_A = (both + a_only) / n, p_B = (both + b_only) / n."""
    a, b, c, d = both, a_only, b_only, neither
    n = a + b + c + d
    if n <= 0:
        return math.nan, math.nan, math.nan
    p1, p2 = (a + b) / n, (a + c) / n
    (l1,), (u1,) = wilson_interval(a + b, n, z)
    (l2,), (u2,) = wilson_interval(a + c, n, z)
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(denom) if denom > 0 else 0.0
    delta = p1 - p2
    dl = math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    du = math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return delta, max(-1.0, delta - dl), min(1.0, delta + du)


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p value: a binomial test of a_only among the discordant images, p = 1/2."""
    m = a_only + b_only
    from scipy import stats as sps

    return 1.0 if m == 0 else float(sps.binomtest(a_only, m, 0.5).pvalue)


def bootstrap_mean(effects: np.ndarray, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
                   level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of per-image effects `effects` (seeds x images): a percentile bootstrap that
    draws seeds with replacement (when there are several) and, independently, images with
    replacement; an image keeps its index in every drawn seed (the same test image)."""
    e = np.asarray(effects, dtype=float)
    if e.ndim == 1:
        e = e[None, :]
    s, n = e.shape
    mean = float(e.mean())
    if n == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    stats = np.empty(samples)
    for i in range(samples):  # a loop keeps memory at one draw (images x seeds)
        rows = rng.integers(0, s, s) if s > 1 else np.zeros(1, dtype=int)
        cols = rng.integers(0, n, n)
        stats[i] = e[np.ix_(rows, cols)].mean()
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return mean, float(lo), float(hi)


def paired_difference(a: np.ndarray, b: np.ndarray, **bootstrap: Any) -> Comparison:
    """Accuracy of A minus accuracy of B, on the same images (bool arrays: images, or seeds x images,
    seed i of A paired with seed i of B). One seed: Newcombe's interval and the exact McNemar test;
    several: the seed-and-image bootstrap of the mean difference."""
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
    diff, lo, hi = bootstrap_mean(a.astype(float) - b.astype(float), **bootstrap)
    return Comparison(diff, lo, hi, f"paired bootstrap over {s} seeds and {n} images", n, s)


# ----------------------------------------------------------------------------- per-image records
def hits_of(exp_dir: str | Path, row: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The per-image record of one done row of the results table (bool array) and the description
    of its test images; None when the evaluation kept none (results written before the record)."""
    run_dir = Path(exp_dir) / str(row["run_dir"])
    try:
        result = read_json(run_dir / "result.json") or {}
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
