"""Where a claim can see its effect: the one rule that every claim's positions pass (results.findings).

A drop in accuracy cannot show where the isolated target is already at chance (nothing left to
crowd), and a gain cannot show where the network it is measured against is already at ceiling
(nothing left to gain). An absolute difference averaged over such positions is diluted, or
decided, by them. So every claim is measured only at the target eccentricities x where, for every
term (at its own position: its target_ecc, or x):

  floor    the isolated target of the network the term reads has a 95% lower bound above
           chance + MARGIN (chance = 1 / num_classes; the table's column, else 1/5 for the
           paper's even digits);
  ceiling  a term marked `baseline` (a network whose gain is measured over it) has a 95% upper
           bound below 1 - MARGIN.

Both from the condition's accuracy interval over the evaluated seeds (results.stats.accuracy_interval:
Wilson with one seed). The alternative, a drop relative to the room above chance, (a - x) / (a - chance),
was not chosen: near chance it divides by a noisy number near 0 (its interval blows up rather than
saying "cannot tell"), it does not apply to gains or to terms without an isolated partner, and it
changes the unit of every effect. With this rule an effect stays an accuracy difference in
percentage points, over fewer positions. When no position is left, the finding is "not testable
here" with the reason (chance, ceiling, or too few conditions), never a diluted "inconclusive".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ecc.conditions import ECC_ATOL

from .stats import accuracy_interval

MARGIN = 0.10        # percentage points above chance (and below 1) that an accuracy must clearly clear
DEFAULT_CHANCE = 0.2  # the paper's networks read even digits: 5 classes


@dataclass(frozen=True)
class Check:
    """The outcome of the rule at one position: None when it passes, else why not."""

    x: float | None
    reason: str | None  # "chance: ...", "ceiling: ...", "too few conditions: ..."


def chance_of(rows: pd.DataFrame) -> float:
    """1 / num_classes of a network's rows (the table's num_classes column), else DEFAULT_CHANCE."""
    if "num_classes" in rows.columns:
        n = pd.to_numeric(rows["num_classes"], errors="coerce").dropna()
        if len(n) and n.iloc[0] > 0:
            return 1.0 / float(n.iloc[0])
    return DEFAULT_CHANCE


def _interval(rows: pd.DataFrame, seeds: Sequence[int]) -> tuple[float, float, float] | None:
    rows = rows[(rows["state"] == "done") & rows["seed"].isin(seeds)]
    if rows.empty:
        return None
    ci = accuracy_interval(pd.to_numeric(rows["n_correct"], errors="coerce").to_numpy(float),
                           pd.to_numeric(rows["n_images"], errors="coerce").to_numpy(float))
    return (ci.estimate, ci.low, ci.high) if math.isfinite(ci.estimate) else None


def floor_reason(network: pd.DataFrame, name: str, at: float, seeds: Sequence[int]) -> str | None:
    """None when the isolated target of `network` (its rows, one configuration) at target `at` is
    clearly above chance; else why not."""
    a = network[(network["label"] == "a") & np.isclose(network["target_ecc"].to_numpy(float), at, atol=ECC_ATOL)]
    a = a[(a["state"] == "done") & a["seed"].isin(seeds)]
    return isolated_reason(pd.to_numeric(a["n_correct"], errors="coerce").to_numpy(float),
                           pd.to_numeric(a["n_images"], errors="coerce").to_numpy(float), chance_of(network), name, at)


def isolated_reason(n_correct: np.ndarray, n_images: np.ndarray, chance: float, name: str, at: float) -> str | None:
    """The floor rule on counts (one per seed): None when the isolated target's accuracy is clearly
    above chance, else why not (results.bouma applies it to per-image records)."""
    ci = accuracy_interval(n_correct, n_images)
    if not math.isfinite(ci.estimate):
        return f"too few conditions: no isolated target of {name} evaluated at target {at:g}"
    acc, low = ci.estimate, ci.low
    need = chance + MARGIN
    if low > need:
        return None
    return (f"chance: the isolated target of {name} at target {at:g} reads {acc:.3f} (95% low {low:.3f}, "
            f"needs > {need:.2f})")


def ceiling_reason(cell: pd.DataFrame, what: str, seeds: Sequence[int]) -> str | None:
    """None when a baseline's accuracy (its rows at one position) is clearly below ceiling; else why not."""
    got = _interval(cell, seeds)
    if got is None:
        return f"too few conditions: {what} not evaluated"
    acc, _, high = got
    if high < 1 - MARGIN:
        return None
    return f"ceiling: {what} reads {acc:.3f} (95% high {high:.3f}, needs < {1 - MARGIN:.2f})"


def summarise(checks: Sequence[Check]) -> str:
    """The reasons positions were left out, each once, in a sentence."""
    reasons = list(dict.fromkeys(c.reason for c in checks if c.reason))
    return "; ".join(reasons)
