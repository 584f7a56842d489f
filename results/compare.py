"""Comparison figures: several models (or flanker sets) on one axis, declared by a sweep
(results.figspec.Comparison in FigureSpec.comparisons), drawn to figures/compare/.

  spacing  curves per model (or flanker set) against target eccentricity
  center   per model, a condition with the target at the centre and off centre, next to the
           isolated target at the centre
  matrix   train configuration (one row per model) x test configuration (a, xa, ax, xax)
with 95% Wilson intervals (pooled over seeds and eccentricities where several rows make one point)
and the chance line.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ecc.conditions import LABELS, evaluated, near

from .drawing import CHANCE_LABEL, NOTE_GID, Curve, chance_level, curve, single
from .figspec import Comparison, FigureSpec
from .stats import wilson_interval


def _pooled(rows: pd.DataFrame) -> tuple[float, float, float, int]:
    """Accuracy of the done rows pooled (sum correct / sum images), its Wilson interval, images."""
    done = rows[rows["state"] == "done"]
    n = float(pd.to_numeric(done["n_images"], errors="coerce").sum()) if len(done) else 0.0
    k = float(pd.to_numeric(done["n_correct"], errors="coerce").sum()) if len(done) else 0.0
    if not n:
        return math.nan, math.nan, math.nan, 0
    lo, hi = wilson_interval(k, n)
    return k / n, float(lo[0]), float(hi[0]), int(n)


def _models(table: pd.DataFrame) -> list[str]:
    """Evaluated models in the order of the table (the plan's order)."""
    return list(dict.fromkeys(evaluated(table)["model"]))


def _label_rows(rows: pd.DataFrame, label: str, spacing: float, flanker_dset: str | None) -> pd.DataFrame:
    """Rows of one test configuration: `label` at `spacing` (a: every unflanked row) of one flanker set."""
    if label == "a":
        return rows[rows["flanker_type"].fillna(-1).astype(int) == 0]
    sel = rows[(rows["label"] == label) & near(rows["spacing"], spacing)]
    return sel if flanker_dset is None else sel[sel["flanker_dset"] == flanker_dset]


def comparison_curves(table: pd.DataFrame, comp: Comparison, spec: FigureSpec = FigureSpec()) -> dict[str, Curve]:
    """The data of a comparison figure (results.figspec.Comparison), one Curve per series.

    spacing: one curve per model (or flanker set), x = target eccentricity. center: series
    "a at T0", "<label> at T0", "<label> at T1" (T0 the centre, T1 off centre), x = the model's
    index in `_models(table)`, one point per model (NaN where the model has no such condition)."""
    ev = evaluated(table)
    if comp.kind == "spacing":
        out = {}
        if comp.by == "model":
            for model in _models(table):
                sel = _label_rows(ev[ev["model"] == model], comp.label, comp.spacing, comp.flanker_dset)
                out[model] = curve(model, sel, sel["target_ecc"])
        else:
            base = ev[ev["model"] == _models(table)[0]] if len(_models(table)) else ev
            flanked = base[base["flanker_type"].fillna(0) > 0]
            for dset in dict.fromkeys(flanked["flanker_dset"].dropna()):
                sel = _label_rows(base, comp.label, comp.spacing, None if comp.label == "a" else dset)
                out[str(dset)] = curve(str(dset), sel, sel["target_ecc"])
        return out
    if comp.kind == "center":
        off = spec.far_target if comp.off_target is None else comp.off_target
        series = {f"a at {spec.center_target:g}": ("a", spec.center_target),
                  f"{comp.label} at {spec.center_target:g}": (comp.label, spec.center_target),
                  f"{comp.label} at {off:g}": (comp.label, off)}
        out = {}
        for name, (label, target) in series.items():
            ys = []
            for model in _models(table):
                rows = _label_rows(ev[ev["model"] == model], label, comp.spacing, comp.flanker_dset)
                ys.append(_pooled(rows[near(rows["target_ecc"], target)]))
            x = np.arange(len(ys), dtype=float)
            out[name] = Curve(name, x, np.array([y[0] for y in ys]), np.array([y[1] for y in ys]),
                              np.array([y[2] for y in ys]), ["done" if y[3] else "missing" for y in ys])
        return out
    raise ValueError(f"comparison kind {comp.kind!r} has no curves; use comparison_matrix")


def comparison_matrix(table: pd.DataFrame, comp: Comparison) -> pd.DataFrame:
    """Train configuration (model, rows) x test configuration (a, xa, ax, xax; columns): accuracy
    at `comp.spacing` pooled over target eccentricities, with ci_low / ci_high / n_images as
    further column groups (a MultiIndex: (quantity, label))."""
    ev = evaluated(table)
    data: dict[tuple[str, str], list[float]] = {}
    models = _models(table)
    for label in LABELS:
        for model in models:
            rows = _label_rows(ev[ev["model"] == model], label, comp.spacing, comp.flanker_dset)
            acc, lo, hi, n = _pooled(rows)
            for q, v in (("accuracy", acc), ("ci_low", lo), ("ci_high", hi), ("n_images", n)):
                data.setdefault((q, label), []).append(v)
    return pd.DataFrame(data, index=pd.Index(models, name="model"))


_SERIES_COLORS = colormaps["tab10"].colors


def _comparison_axes(ax: Axes, table: pd.DataFrame, comp: Comparison, spec: FigureSpec) -> None:
    chance = chance_level(evaluated(table)) if len(evaluated(table)) else 0.2
    if comp.kind == "matrix":
        m = comparison_matrix(table, comp)
        acc = m["accuracy"].to_numpy(float)
        image = ax.imshow(acc, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        image.set_gid("matrix")
        for i in range(acc.shape[0]):
            for j in range(acc.shape[1]):
                v = acc[i, j]
                ax.text(j, i, "n/a" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if not np.isfinite(v) or v < 0.6 else "black")
        ax.set_xticks(range(acc.shape[1]), list(m["accuracy"].columns))
        ax.set_yticks(range(acc.shape[0]), list(m.index))
        ax.set_xlabel("test configuration")
        ax.set_ylabel("trained on")
        ax.figure.colorbar(image, ax=ax, label="accuracy", shrink=0.8)
        ax.set_title(comp.title or f"spacing {comp.spacing:g} px", fontsize=9)
        return
    curves = comparison_curves(table, comp, spec)
    notes = []
    for i, (name, c) in enumerate(curves.items()):
        if not c.has_data:
            notes.append(f"{name}: no data ({c.why_empty()})")
            continue
        offset = (i - (len(curves) - 1) / 2) * 0.12 if comp.kind == "center" else 0.0
        yerr = np.vstack([np.maximum(c.y - c.lo, 0), np.maximum(c.hi - c.y, 0)])
        bars = ax.errorbar(c.x + offset, c.y, yerr=yerr, label=name, capsize=2, lw=1.5, ms=4,
                           color=_SERIES_COLORS[i % len(_SERIES_COLORS)], marker="osD^v<>"[i % 7],
                           ls="none" if comp.kind == "center" else "-")
        bars.lines[0].set_gid(name)
    ax.axhline(chance, ls=":", color="0.4", lw=1.2, label=CHANCE_LABEL, gid=CHANCE_LABEL)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.25)
    if comp.kind == "center":
        models = _models(table)
        ax.set_xticks(range(len(models)), models, rotation=20, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(models) - 0.4)
        what = f"{comp.label} at spacing {comp.spacing:g}: target at the centre and off centre"
    else:
        ax.set_xlabel("target eccentricity (px)")
        what = (f"{comp.label} at spacing {comp.spacing:g}" if comp.label != "a" else "no flanker (a)") + (
            ", per flanker set" if comp.by == "flanker_dset" else ", per model")
    ax.set_title(comp.title or what, fontsize=9)
    ax.legend(loc="lower left", fontsize=7, frameon=False, ncol=2)
    if notes:
        ax.text(0.99, 0.99, "\n".join(notes), transform=ax.transAxes, ha="right", va="top", fontsize=7,
                color="0.25", gid=NOTE_GID, bbox={"fc": "white", "ec": "0.8", "alpha": 0.85})


def comparison_figure(table: pd.DataFrame, comp: Comparison, spec: FigureSpec = FigureSpec()) -> Figure:
    """One comparison (results.figspec.Comparison): several models (or flanker sets) on one axis
    with 95% Wilson intervals and the chance line; or, kind matrix, a train x test accuracy matrix
    (an AxesImage with gid "matrix"). Each series' data line carries its name as gid."""
    return single(lambda ax: _comparison_axes(ax, table, comp, spec), size=(6.4, 4.4))

