"""Interval estimates of accuracies and effects, and the multiplicity correction of a family of claims.

What each interval speaks about (docs/experiments.md, "What an interval means"):
  one network     one trained network (one seed) on a test set drawn from the image population:
                  Wilson (an accuracy, statsmodels), Newcombe's paired score interval with the exact
                  McNemar test (two conditions on the same images), the t interval over images (any
                  weighted sum of conditions, paired image by image), the unpaired normal interval
                  (counts only). Seed-to-seed variation is not in them.
  architecture    the configuration trained with any seed, from several seeds that share one test
                  set: seeds and images are crossed random effects,
                      e[s, i] = mu + a_s + b_i + (ab)_si,
                  and Var(mean) = var_a / S + var_b / n + var_ab / (S n), estimated from the two-way
                  ANOVA mean squares (method of moments, components cut at 0); the seeds' part takes
                  the t quantile of S - 1 df, the images' part that of n - 1 (`crossed_interval`).
                  Without per-image records, the t interval over per-seed values widened by the
                  test set's binomial variance, which the seeds share (`seed_counts_interval`).
The coverage of each, simulated: bench/coverage.py (README, "Statistics").
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

Z95 = 1.959963984540054  # two-sided 95% normal quantile
ALPHA = 0.05


@functools.lru_cache(maxsize=4096)  # a report asks for a few df (S - 1, n - 1) again and again
def _t_quantile(df: float, level: float) -> float:
    from scipy import stats as sps  # here: scipy.stats takes a second to import, and launches need none

    return float(sps.t.ppf(0.5 + level / 2, df)) if math.isfinite(df) else float(sps.norm.ppf(0.5 + level / 2))


def _t_p_value(estimate: float, se: float, df: float) -> float:
    from scipy import stats as sps

    if not (math.isfinite(estimate) and math.isfinite(se)):
        return math.nan
    if se == 0:
        return 1.0 if estimate == 0 else 0.0
    tail = sps.t.sf(abs(estimate) / se, df) if math.isfinite(df) else sps.norm.sf(abs(estimate) / se)
    return float(min(1.0, 2 * tail))


@functools.lru_cache(maxsize=16)
def _level_of(z: float) -> float:
    from scipy import stats as sps

    return 1 - 2 * float(sps.norm.sf(z))


@dataclass(frozen=True)
class Interval:
    """An estimate with its interval, its standard error and the degrees of freedom of its quantile
    (inf: normal; NaN: `effective_df`, from the half width); p_value tests estimate = 0 with the same
    t (or normal) distribution."""

    estimate: float
    low: float
    high: float
    se: float = math.nan
    df: float = math.nan
    method: str = ""

    @property
    def effective_df(self) -> float:
        """df, or where the interval combines parts with their own quantiles, the df whose t quantile
        gives its half width (computed on demand: a root search)."""
        if not math.isnan(self.df) or not (self.se > 0 and math.isfinite(self.high - self.estimate)):
            return self.df
        return _effective_df((self.high - self.estimate) / self.se, 0.95)

    @property
    def p_value(self) -> float:
        return _t_p_value(self.estimate, self.se, self.effective_df)


NAN_INTERVAL = Interval(math.nan, math.nan, math.nan)


def _from_variance(estimate: float, var: float, df: float, method: str, level: float) -> Interval:
    se = math.sqrt(max(var, 0.0))
    half = _t_quantile(df, level) * se if df > 0 else math.inf
    return Interval(estimate, estimate - half, estimate + half, se, df, method)


# ----------------------------------------------------------------------------- one proportion
def wilson_interval(n_correct: Any, n_images: Any, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of binomial proportions k/n (statsmodels proportion_confint, no
    continuity correction). Vectorised; NaN where n is missing or 0."""
    k = np.asarray(pd.to_numeric(pd.Series(np.atleast_1d(n_correct)), errors="coerce"), dtype=float)
    n = np.asarray(pd.to_numeric(pd.Series(np.atleast_1d(n_images)), errors="coerce"), dtype=float)
    lo, hi = np.full(k.shape, np.nan), np.full(k.shape, np.nan)
    ok = np.isfinite(k) & np.isfinite(n) & (n > 0)
    if ok.any():
        from statsmodels.stats.proportion import proportion_confint

        alpha = 1 - _level_of(z)
        lo[ok], hi[ok] = proportion_confint(k[ok], n[ok], alpha=alpha, method="wilson")
    # Exact ends (the formula gives them up to rounding): k = 0 -> low 0, k = n -> high 1.
    lo, hi = np.where(k == 0, 0.0, lo), np.where(ok & (k == n), 1.0, hi)
    return np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)


# ----------------------------------------------------------------------------- one network, paired
def newcombe_paired(both: int, a_only: int, b_only: int, neither: int, z: float = Z95) -> tuple[float, float, float]:
    """(p_A - p_B, low, high): Newcombe's score interval for the difference of two paired proportions
    (method 10 of Newcombe 1998, from the Wilson intervals of each proportion and the phi correlation
    of the 2x2 table); no library has it. p_A = (both + a_only) / n, p_B = (both + b_only) / n."""
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
    """Two-sided exact McNemar p value (statsmodels: a binomial test of the discordant images, p = 1/2)."""
    if a_only + b_only == 0:
        return 1.0
    from statsmodels.stats.contingency_tables import mcnemar

    return float(mcnemar([[0, a_only], [b_only, 0]], exact=True).pvalue)


# ----------------------------------------------------------------------------- seeds x images
def mean_squares(e: np.ndarray) -> tuple[float, float, float]:
    """(MS_seeds, MS_images, MS_residual) of the two-way layout without replication (seeds x images)."""
    s, n = e.shape
    grand, seed_means, image_means = e.mean(), e.mean(axis=1), e.mean(axis=0)
    ms_s = n * float(((seed_means - grand) ** 2).sum()) / (s - 1)
    ms_i = s * float(((image_means - grand) ** 2).sum()) / (n - 1)
    resid = e - seed_means[:, None] - image_means[None, :] + grand
    ms_e = float((resid**2).sum()) / ((s - 1) * (n - 1))
    return ms_s, ms_i, ms_e


def _effective_df(q: float, level: float) -> float:
    """The degrees of freedom whose t quantile is q (inf when q is at or below the normal's)."""
    from scipy import optimize

    if q <= _t_quantile(math.inf, level) * (1 + 1e-12):
        return math.inf
    return float(optimize.brentq(lambda df: _t_quantile(df, level) - q, 1e-3, 1e9, xtol=1e-6))


def _two_part(estimate: float, seed_var: float, seed_df: float, rest_var: float, rest_df: float, method: str,
              level: float) -> Interval:
    """half width = sqrt(t(seed_df)^2 seed_var + t(rest_df)^2 rest_var): each part of the variance
    with the quantile of its own degrees of freedom. The seeds' part, from a few seeds, keeps its
    S - 1; a pooled (Satterthwaite) df would be larger, and too liberal when one part is estimated
    from 2 to 4 seeds (bench/coverage.py measured 0.91 with 3 seeds, 3x spread). The Interval's df
    is the df whose t quantile gives the same half width (`Interval.effective_df`, for its p value)."""
    var = seed_var + rest_var
    if var <= 0:
        return Interval(estimate, estimate, estimate, 0.0, math.inf, method)
    half2 = (_t_quantile(seed_df, level) ** 2 * seed_var if seed_var > 0 else 0.0) + \
        (_t_quantile(rest_df, level) ** 2 * rest_var if rest_var > 0 else 0.0)
    half = math.sqrt(half2)
    df = math.nan if level == 0.95 else _effective_df(half / math.sqrt(var), level)
    return Interval(estimate, estimate - half, estimate + half, math.sqrt(var), df, method)


def crossed_interval(effects: Any, level: float = 0.95) -> Interval:
    """The mean of per-image values e (seeds x images, the same images in every seed) with its
    interval. One seed: the one-sample t interval over images (this network). Several: seeds and
    images as crossed random effects, from the two-way mean squares (`mean_squares`):
        seeds' part   MS_s / (S n)            on S - 1 df  (var_seeds / S + var_resid / (S n)),
        images' part  (MS_i - MS_e) / (S n)   on n - 1 df  (var_images / n),
    Var(mean) = their sum = (MS_s + MS_i - MS_e) / (S n), unbiased. A component whose estimate would
    be negative is 0: MS_s below MS_e, the seeds' part is MS_e / (S n) on (S - 1)(n - 1) df; MS_i
    below MS_e, the images' part is 0. The residual rides with the seeds' part, so that a seed
    variance estimated near 0 from 2 to 4 seeds still gets their quantile (with it in the images'
    part, coverage was 0.91 with 3 seeds at 3x spread). The images' part keeps MS_i's n - 1 df:
    Satterthwaite's df of a difference near 0 tends to 0 and its quantile to infinity. Half width:
    `_two_part`."""
    e = np.atleast_2d(np.asarray(effects, dtype=float))
    s, n = e.shape
    if n < 2:
        return Interval(float(e.mean()) if e.size else math.nan, math.nan, math.nan)
    mean = float(e.mean())
    if s == 1:
        return _from_variance(mean, float(e.var(ddof=1)) / n, n - 1.0, f"t interval over {n} images (this network)",
                              level)
    ms_s, ms_i, ms_e = mean_squares(e)
    df_e = (s - 1.0) * (n - 1.0)
    seed, seed_df = (ms_s, s - 1.0) if ms_s >= ms_e else (ms_e, df_e)
    image = max(ms_i - ms_e, 0.0)
    return _two_part(mean, seed / (s * n), seed_df, image / (s * n), n - 1.0,
                     f"crossed seeds x images over {s} seeds and {n} images", level)


def seed_counts_interval(values: Any, variances: Any, level: float = 0.95) -> Interval:
    """The mean of per-seed values from counts only (an accuracy or a weighted sum of accuracies per
    seed; `variances`: each one's binomial variance over its test images). One seed: the normal
    interval of that one network. Several: Var = sd^2 / S + mean(variances), the spread of the seeds
    (on S - 1 df) plus the test set's binomial variance, which every seed shares (its images are the
    same; a normal quantile); half width as `_two_part`."""
    x, v = np.asarray(values, dtype=float), np.asarray(variances, dtype=float)
    ok = np.isfinite(x) & np.isfinite(v)
    x, v = x[ok], v[ok]
    s = len(x)
    if s == 0:
        return NAN_INTERVAL
    mean = float(x.mean())
    if s == 1:
        return _from_variance(mean, float(v[0]), math.inf, "unpaired normal interval on this network's counts",
                              level)
    return _two_part(mean, float(x.var(ddof=1)) / s, s - 1.0, float(v.mean()), math.inf,
                     f"t interval over {s} seeds' counts and the shared test set", level)


def t_interval(values: Any, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean of values (NaNs dropped); low = high = NaN
    with fewer than two values."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    if len(x) < 2:
        return float(x.mean()), math.nan, math.nan
    i = _from_variance(float(x.mean()), float(x.var(ddof=1)) / len(x), len(x) - 1.0, "", level)
    return i.estimate, i.low, i.high


# ----------------------------------------------------------------------------- a family of claims
def holm(p_values: Any, alpha: float = ALPHA) -> np.ndarray:
    """Holm-adjusted p values (statsmodels multipletests) of the finite ones; NaN stays NaN."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        from statsmodels.stats.multitest import multipletests

        out[ok] = multipletests(p[ok], alpha=alpha, method="holm")[1]
    return out
