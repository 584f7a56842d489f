"""Bouma's law per network, reported: bouma.csv (one row per network x target eccentricity), the
findings.md section (one row per network) and the figure (critical spacing against eccentricity, one
line per network, the human band beside them). The fits: results.bouma."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core.atomic import atomic_write_bytes
from core.layout import BOUMA_CSV

if TYPE_CHECKING:  # matplotlib loads only to draw: findings.md and the launcher's checks do without it
    from matplotlib.figure import Figure

from .bouma import HUMAN_BOUMA, HUMAN_SOURCE, LABEL, BoumaFit, Critical


def table_of(found: Sequence[BoumaFit]) -> pd.DataFrame:
    """One row per network x target eccentricity (bouma.csv): the critical spacing or why not, and the
    network's line."""
    rows = []
    for f in found:
        line = {"factor": f.factor, "factor_low": f.factor_low, "factor_high": f.factor_high,
                "intercept": f.intercept, "intercept_low": f.intercept_low, "intercept_high": f.intercept_high,
                "verdict": f.verdict, "scope": f.scope, "seeds": ",".join(map(str, f.seeds)),
                "n_images": f.n_images, "n_boot": f.n_boot}
        for p in f.points or (Critical(math.nan, reason=f.reason),):
            rows.append({"model": f.model, "learning_rate": f.learning_rate, "target_ecc": p.target_ecc,
                         "n_spacings": len(p.spacings), "isolated": p.isolated, "chance": p.chance,
                         "critical": p.critical if p.fitted else math.nan, "critical_low": p.low,
                         "critical_high": p.high, "steepness": p.steepness, "reason": p.reason, **line})
    return pd.DataFrame(rows)


def save(exp_dir: str | Path, found: Sequence[BoumaFit]) -> list[Path]:
    """bouma.csv in the experiment folder, atomically."""
    return [atomic_write_bytes(Path(exp_dir) / BOUMA_CSV, table_of(found).to_csv(index=False).encode())]


def markdown(found: Sequence[BoumaFit]) -> list[str]:
    """findings.md's section: one row per network."""
    lines = ["## Bouma's law per network", "",
             f"Critical spacing: the spacing at which {LABEL} (two flankers) accuracy is half way from chance to "
             "the isolated target's, from a Weibull fit over the tested spacings; the Bouma factor is the slope "
             f"of critical spacing against target eccentricity ({HUMAN_SOURCE}). Intervals: 95% bootstrap over "
             "test images (and seeds when there are several); docs/bouma.md.", ""]
    if not found:
        return [*lines, "No network was evaluated.", ""]
    lines += ["| model | lr | Bouma's law | intercept (px) | critical spacing (px) at target eccentricity | left out "
              "(bouma.csv: each reason) | seeds |", "|---|---|---|---|---|---|---|"]
    for f in found:
        icpt = "-" if not math.isfinite(f.intercept) else \
            f"{f.intercept:.0f} ({f.intercept_low:.0f} to {f.intercept_high:.0f})"
        per = "; ".join(f"{p.target_ecc:g}: {p.critical:.0f} ({p.low:.0f} to {p.high:.0f})"
                        for p in f.points if p.fitted) or "-"
        scope = "-" if not f.seeds else f"{len(f.seeds)} ({f.scope})"
        lines.append(f"| {f.model} | {f.learning_rate:g} | **{f.verdict}** | {icpt} | {per} | {left_out(f) or '-'} "
                     f"| {scope} |")
    return [*lines, ""]


def _kind(reason: str) -> str:
    """A reason without its particulars: 'too few spacings', 'no crowding within the tested spacings', ..."""
    return reason.split(" at target")[0].split(" (")[0].split(":")[0]


def left_out(fit: BoumaFit) -> str:
    """The eccentricities without a critical spacing, grouped by the kind of reason."""
    kinds: dict[str, list[str]] = {}
    for p in fit.points:
        if not p.fitted:
            kinds.setdefault(_kind(p.reason), []).append(f"{p.target_ecc:g}")
    return "; ".join(f"{', '.join(eccs)}: {kind}" for kind, eccs in kinds.items())


def figure_reason(found: Sequence[BoumaFit]) -> str | None:
    """None when some network has a critical spacing to draw; else why there is no Bouma figure."""
    if any(p.fitted for f in found for p in f.points):
        return None
    if not found:
        return "no evaluated network"
    reasons = {_kind(p.reason) for f in found for p in f.points} | {f.reason for f in found if not f.points}
    return "no critical spacing at any eccentricity (" + "; ".join(sorted(r for r in reasons if r)) + ")"


def figure(found: Sequence[BoumaFit]) -> Figure:
    """Critical spacing against target eccentricity: per network its critical spacings with their
    intervals and its Bouma line (dashed, where fitted), the human band (HUMAN_BOUMA x eccentricity)
    shaded. Eccentricities without a critical spacing are left out (bouma.csv says why)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.6), layout="constrained")
    ax = fig.add_subplot()
    eccs = [p.target_ecc for f in found for p in f.points if p.fitted]
    x = np.linspace(0.0, max(eccs, default=1.0) * 1.05 or 1.0, 50)
    ax.fill_between(x, HUMAN_BOUMA[0] * x, HUMAN_BOUMA[1] * x, color="0.6", alpha=0.25, lw=0,
                    label=textwrap.fill(f"slope of {HUMAN_SOURCE}", 64),
                    gid="human")
    for i, f in enumerate(p for p in found if any(q.fitted for q in p.points)):
        pts = [p for p in f.points if p.fitted]
        t = np.array([p.target_ecc for p in pts])
        c = np.array([p.critical for p in pts])
        err = np.vstack([np.maximum(c - [p.low for p in pts], 0), np.maximum(np.array([p.high for p in pts]) - c, 0)])
        name = textwrap.fill(f"{f.model} (lr {f.learning_rate:g}): {f.verdict}", 64)  # inside the axes
        bars = ax.errorbar(t, c, yerr=np.nan_to_num(err), fmt="o", ms=4, capsize=2, color=f"C{i}", label=name)
        bars.lines[0].set_gid(f.model)
        if math.isfinite(f.factor):
            ax.plot(x, f.intercept + f.factor * x, ls="--", lw=1.2, color=f"C{i}", gid=f"{f.model} line")
    skipped = [f"{f.model}: {left_out(f) or f.reason}" for f in found if not any(p.fitted for p in f.points)]
    if skipped:
        ax.text(0.99, 0.01, "not drawn:\n" + "\n".join(skipped), transform=ax.transAxes, ha="right", va="bottom",
                fontsize=6, color="0.25", gid="notes", wrap=True)
    ax.set_xlabel("target eccentricity (px)")
    ax.set_ylabel(f"critical spacing (px), {LABEL}")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.25)
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    ax.set_title("Bouma's law: critical spacing against eccentricity", fontsize=9)
    return fig
