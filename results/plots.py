"""The paper's figures from a results table, plus a stimulus gallery, training curves and heatmaps.

Per evaluated model (ORIGINAL.md "Training, selection, evaluation", the original's summary_utils):
  spacing_figure        x = target eccentricity; a, xa (flanker S nearer the centre), ax (S farther
                        out), xax (two flankers at spacing S)
  center_target_figure  target fixed (at 0): x = flanker eccentricity; a (constant), ax, xax
  far_target_figure     target fixed far out (720): x = target - flanker eccentricity; a (constant), xa
and, declared by a sweep (FigureSpec.comparisons), comparison figures with several models (or
flanker sets) on one axis: comparison_figure (curves per model, centre vs off centre per model,
train x test configuration matrices),
with 95% Wilson intervals as error bars and the chance line (1 / classes). A curve with no data is
left out and named in a note on the axes (a Text with gid "notes"); a failed or missing point is a
gap (NaN) in its curve. Each curve's data line carries its label as gid ("a", "xa", ..., "chance").
Figures are `matplotlib.figure.Figure` objects (no pyplot state); files are rendered with Agg.
"""

from __future__ import annotations

import logging
import math
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from core.atomic import CorruptFileError, atomic_write
from ecc.evaluate import LABELS
from ecc.model import num_classes

from . import table as tbl
from .figspec import FigureSpec

logger = logging.getLogger(__name__)

STYLE = {  # label -> colour and marker (the original's markers: > for xa, < for ax, s for xax)
    "a": {"color": "#222222", "marker": "o"},
    "xa": {"color": "#e66101", "marker": ">"},
    "ax": {"color": "#1f78b4", "marker": "<"},
    "xax": {"color": "#b2182b", "marker": "s"},
}
NOTE_GID, CHANCE_LABEL = "notes", "chance"
_ATOL = 1e-6




# ----------------------------------------------------------------------------- the data behind each curve
@dataclass
class Curve:
    """One curve: x, accuracy (NaN where the job has no result: a gap) and its Wilson interval."""

    label: str
    x: np.ndarray
    y: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    states: list[str]

    @property
    def has_data(self) -> bool:
        return bool(np.isfinite(self.y).any())

    def why_empty(self) -> str:
        if not self.states:
            return "not in the grid"
        counts = pd.Series(self.states).value_counts()
        return f"{len(self.states)} planned: " + ", ".join(f"{n} {s}" for s, n in counts.items())

    def gaps(self) -> int:
        return int((~np.isfinite(self.y)).sum())


def _curve(label: str, rows: pd.DataFrame, x: pd.Series) -> Curve:
    """Rows (with their x) -> a curve sorted by x; one point per x (a done job wins)."""
    df = rows.assign(_x=np.asarray(x, dtype=float), _rank=rows["state"].map(lambda s: s != "done"))
    df = df[np.isfinite(df["_x"])].sort_values(["_x", "_rank"], kind="stable").drop_duplicates("_x")
    return Curve(label, df["_x"].to_numpy(float), df["accuracy"].to_numpy(float),
                 df["ci_low"].to_numpy(float), df["ci_high"].to_numpy(float), list(df["state"]))


def _near(values: pd.Series, x: float) -> pd.Series:
    return pd.Series(np.isclose(values.to_numpy(float), x, atol=_ATOL), index=values.index)


def model_rows(table: pd.DataFrame, model: str) -> pd.DataFrame:
    """The evaluation rows of one model run, named by its model_hash or its (unique) model name."""
    evaluated = table[(table["model_hash"] != "") & table["flanker_type"].notna()]
    rows = evaluated[evaluated["model_hash"] == model]
    if rows.empty:
        rows = evaluated[evaluated["model"] == model]
    if rows.empty:
        raise ValueError(f"model {model!r} has no evaluation rows; models: {sorted(set(evaluated['model']))}")
    if rows["model_hash"].nunique() > 1:
        raise ValueError(f"model {model!r} was evaluated as several runs; name one by its model_hash: "
                         f"{sorted(set(rows['model_hash']))}")
    return rows


def flanker_dsets(rows: pd.DataFrame) -> list[str]:
    """Flanker datasets of a model's flanked conditions (type 0 does not depend on it)."""
    flanked = rows[rows["flanker_type"].fillna(0) > 0]
    return sorted(set(flanked["flanker_dset"].dropna())) or sorted(set(rows["flanker_dset"].dropna()))


def _split(rows: pd.DataFrame, flanker_dset: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(unflanked rows, flanked rows) of one flanker dataset."""
    dsets = flanker_dsets(rows)
    if flanker_dset is None:
        if len(dsets) > 1:
            raise ValueError(f"model {rows['model'].iloc[0]!r} was evaluated with several flanker datasets; "
                             f"choose one with flanker_dset: {dsets}")
        flanker_dset = dsets[0] if dsets else None
    ftype = rows["flanker_type"].fillna(-1).astype(int)
    none = rows[ftype == 0]
    if flanker_dset is not None and (none["flanker_dset"] == flanker_dset).any():
        none = none[none["flanker_dset"] == flanker_dset]
    flanked = rows[(ftype > 0) & ((rows["flanker_dset"] == flanker_dset) if flanker_dset else True)]
    return none, flanked


def spacing_curves(rows: pd.DataFrame, spacing: float, flanker_dset: str | None = None) -> dict[str, Curve]:
    """a, xa, ax, xax against target eccentricity at one target-flanker spacing."""
    none, fl = _split(rows, flanker_dset)
    at = fl[_near(fl["spacing"], spacing)]
    out = {"a": _curve("a", none, none["target_ecc"])}
    for label in ("xa", "ax", "xax"):
        sel = at[at["label"] == label]
        out[label] = _curve(label, sel, sel["target_ecc"])
    return out


def center_curves(rows: pd.DataFrame, target_ecc: float = 0.0,
                  flanker_dset: str | None = None) -> dict[str, Curve]:
    """Target fixed (at the centre): a (one point), ax and xax against flanker eccentricity."""
    none, fl = _split(rows, flanker_dset)
    at = fl[_near(fl["target_ecc"], target_ecc)]
    a = none[_near(none["target_ecc"], target_ecc)]
    out = {"a": _curve("a", a, a["target_ecc"])}
    for label in ("ax", "xax"):
        sel = at[at["label"] == label]
        out[label] = _curve(label, sel, sel["flanker_ecc"])
    return out


def far_curves(rows: pd.DataFrame, target_ecc: float = 720.0, flanker_dset: str | None = None) -> dict[str, Curve]:
    """Target fixed far out: a (one point) and xa against target - flanker eccentricity."""
    none, fl = _split(rows, flanker_dset)
    at = fl[_near(fl["target_ecc"], target_ecc) & (fl["label"] == "xa")]
    a = none[_near(none["target_ecc"], target_ecc)]
    return {"a": _curve("a", a, a["target_ecc"]), "xa": _curve("xa", at, at["target_ecc"] - at["flanker_ecc"])}


# ----------------------------------------------------------------------------- drawing
def _chance(rows: pd.DataFrame) -> float:
    if "num_classes" in rows and rows["num_classes"].notna().any():
        return 1.0 / float(rows["num_classes"].dropna().iloc[0])
    if "parity" in rows and rows["parity"].notna().any():
        return 1.0 / num_classes(rows["parity"].dropna().iloc[0])
    return 0.2


def _errorbar(ax: Axes, c: Curve) -> None:
    yerr = np.vstack([np.maximum(c.y - c.lo, 0), np.maximum(c.hi - c.y, 0)])
    bars = ax.errorbar(c.x, c.y, yerr=yerr, label=c.label, capsize=2, lw=1.5, ms=4, **STYLE[c.label])
    bars.lines[0].set_gid(c.label)  # the data line, found by tests and scripts via its gid


def _constant(ax: Axes, c: Curve, x0: float, x1: float) -> None:
    """The no-flanker accuracy at the fixed target, drawn across the figure with its interval as a band."""
    y, lo, hi = float(c.y[0]), float(c.lo[0]), float(c.hi[0])
    ax.plot([x0, x1], [y, y], label=c.label, gid=c.label, lw=1.5, color=STYLE[c.label]["color"])
    ax.fill_between([x0, x1], [lo, lo], [hi, hi], color=STYLE[c.label]["color"], alpha=0.12, lw=0)


def _draw(ax: Axes, curves: dict[str, Curve], chance: float, *, constant: str | None = None) -> None:
    """Curves with data as error bars (the `constant` one as a band across the x range), the chance
    line, and a note naming the curves left out and the gaps."""
    notes = []
    xs = [c.x for name, c in curves.items() if name != constant and c.has_data]
    x_all = np.concatenate(xs) if xs else np.concatenate([c.x for c in curves.values()] + [np.zeros(0)])
    x0, x1 = (float(x_all.min()), float(x_all.max())) if x_all.size else (0.0, 1.0)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    for name, c in curves.items():
        if not c.has_data:
            notes.append(f"{name}: no data ({c.why_empty()})")
            continue
        if name == constant:
            _constant(ax, c, x0, x1)
        else:
            _errorbar(ax, c)
            if c.gaps():
                notes.append(f"{name}: {c.gaps()} of {len(c.x)} points without a result (gaps)")
    ax.axhline(chance, ls=":", color="0.4", lw=1.2, label=CHANCE_LABEL, gid=CHANCE_LABEL)
    pad = 0.03 * (x1 - x0)
    ax.set_xlim(x0 - pad, x1 + pad)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.25)
    handles = dict(zip(*reversed(ax.get_legend_handles_labels()), strict=True))  # label -> handle
    order = [k for k in (*LABELS, CHANCE_LABEL) if k in handles]
    ax.legend([handles[k] for k in order], order, loc="lower left", ncol=5, fontsize=8, frameon=False,
              handlelength=1.5)
    if notes:
        ax.text(0.99, 0.99, "\n".join(notes), transform=ax.transAxes, ha="right", va="top", fontsize=7,
                color="0.25", gid=NOTE_GID, bbox={"fc": "white", "ec": "0.8", "alpha": 0.85})


def _title(rows: pd.DataFrame, what: str, flanker_dset: str | None) -> str:
    model, lr = rows["model"].iloc[0], rows["learning_rate"].iloc[0]
    dsets = flanker_dsets(rows)
    dset = flanker_dset or (dsets[0] if len(dsets) == 1 else None)
    extra = f", {dset} flankers" if dset and dset != "MNIST" else ""
    lr_text = f" (lr {lr:g})" if isinstance(lr, float) and math.isfinite(lr) else ""
    return f"{model}{lr_text}\n{what}{extra}"


def _panel_spacing(ax: Axes, rows: pd.DataFrame, spacing: float, flanker_dset: str | None) -> None:
    _draw(ax, spacing_curves(rows, spacing, flanker_dset), _chance(rows))
    ax.set_xlabel("target eccentricity (px)")
    ax.set_title(_title(rows, f"spacing {spacing:g} px", flanker_dset), fontsize=9)


def _panel_center(ax: Axes, rows: pd.DataFrame, target_ecc: float, flanker_dset: str | None) -> None:
    _draw(ax, center_curves(rows, target_ecc, flanker_dset), _chance(rows), constant="a")
    ax.set_xlabel("flanker eccentricity (px)")
    ax.set_title(_title(rows, f"target at {target_ecc:g} px", flanker_dset), fontsize=9)


def _panel_far(ax: Axes, rows: pd.DataFrame, target_ecc: float, flanker_dset: str | None) -> None:
    _draw(ax, far_curves(rows, target_ecc, flanker_dset), _chance(rows), constant="a")
    ax.set_xlabel("target - flanker eccentricity (px)")
    ax.set_title(_title(rows, f"target at {target_ecc:g} px", flanker_dset), fontsize=9)


# ----------------------------------------------------------------------------- comparisons (several models on one axis)
def _pooled(rows: pd.DataFrame) -> tuple[float, float, float, int]:
    """Accuracy of the done rows pooled (sum correct / sum images), its Wilson interval, images."""
    done = rows[rows["state"] == "done"]
    n = float(pd.to_numeric(done["n_images"], errors="coerce").sum()) if len(done) else 0.0
    k = float(pd.to_numeric(done["n_correct"], errors="coerce").sum()) if len(done) else 0.0
    if not n:
        return math.nan, math.nan, math.nan, 0
    lo, hi = tbl.wilson_interval(k, n)
    return k / n, float(lo[0]), float(hi[0]), int(n)


def _evaluated(table: pd.DataFrame) -> pd.DataFrame:
    return table[(table["model_hash"] != "") & table["flanker_type"].notna()]


def _models(table: pd.DataFrame) -> list[str]:
    """Evaluated models in the order of the table (the plan's order)."""
    return list(dict.fromkeys(_evaluated(table)["model"]))


def _label_rows(rows: pd.DataFrame, label: str, spacing: float, flanker_dset: str | None) -> pd.DataFrame:
    """Rows of one test configuration: `label` at `spacing` (a: every unflanked row) of one flanker set."""
    if label == "a":
        return rows[rows["flanker_type"].fillna(-1).astype(int) == 0]
    sel = rows[(rows["label"] == label) & _near(rows["spacing"], spacing)]
    return sel if flanker_dset is None else sel[sel["flanker_dset"] == flanker_dset]


def comparison_curves(table: pd.DataFrame, comp: Any, spec: FigureSpec = FigureSpec()) -> dict[str, Curve]:
    """The data of a comparison figure (results.figspec.Comparison), one Curve per series.

    spacing: one curve per model (or flanker set), x = target eccentricity. center: series
    "a at T0", "<label> at T0", "<label> at T1" (T0 the centre, T1 off centre), x = the model's
    index in `_models(table)`, one point per model (NaN where the model has no such condition)."""
    evaluated = _evaluated(table)
    if comp.kind == "spacing":
        out = {}
        if comp.by == "model":
            for model in _models(table):
                sel = _label_rows(evaluated[evaluated["model"] == model], comp.label, comp.spacing, comp.flanker_dset)
                out[model] = _curve(model, sel, sel["target_ecc"])
        else:
            base = evaluated[evaluated["model"] == _models(table)[0]] if len(_models(table)) else evaluated
            flanked = base[base["flanker_type"].fillna(0) > 0]
            for dset in dict.fromkeys(flanked["flanker_dset"].dropna()):
                sel = _label_rows(base, comp.label, comp.spacing, None if comp.label == "a" else dset)
                out[str(dset)] = _curve(str(dset), sel, sel["target_ecc"])
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
                rows = _label_rows(evaluated[evaluated["model"] == model], label, comp.spacing, comp.flanker_dset)
                ys.append(_pooled(rows[_near(rows["target_ecc"], target)]))
            x = np.arange(len(ys), dtype=float)
            out[name] = Curve(name, x, np.array([y[0] for y in ys]), np.array([y[1] for y in ys]),
                              np.array([y[2] for y in ys]), ["done" if y[3] else "missing" for y in ys])
        return out
    raise ValueError(f"comparison kind {comp.kind!r} has no curves; use comparison_matrix")


def comparison_matrix(table: pd.DataFrame, comp: Any) -> pd.DataFrame:
    """Train configuration (model, rows) x test configuration (a, xa, ax, xax; columns): accuracy
    at `comp.spacing` pooled over target eccentricities, with ci_low / ci_high / n_images as
    further column groups (a MultiIndex: (quantity, label))."""
    evaluated = _evaluated(table)
    data: dict[tuple[str, str], list[float]] = {}
    models = _models(table)
    for label in LABELS:
        for model in models:
            rows = _label_rows(evaluated[evaluated["model"] == model], label, comp.spacing, comp.flanker_dset)
            acc, lo, hi, n = _pooled(rows)
            for q, v in (("accuracy", acc), ("ci_low", lo), ("ci_high", hi), ("n_images", n)):
                data.setdefault((q, label), []).append(v)
    return pd.DataFrame(data, index=pd.Index(models, name="model"))


_SERIES_COLORS = colormaps["tab10"].colors


def _comparison_axes(ax: Axes, table: pd.DataFrame, comp: Any, spec: FigureSpec) -> None:
    chance = _chance(_evaluated(table)) if len(_evaluated(table)) else 0.2
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


def comparison_figure(table: pd.DataFrame, comp: Any, spec: FigureSpec = FigureSpec()) -> Figure:
    """One comparison (results.figspec.Comparison): several models (or flanker sets) on one axis
    with 95% Wilson intervals and the chance line; or, kind matrix, a train x test accuracy matrix
    (an AxesImage with gid "matrix"). Each series' data line carries its name as gid."""
    return _single(lambda ax: _comparison_axes(ax, table, comp, spec), size=(6.4, 4.4))


def comparison_figures(table: pd.DataFrame, spec: FigureSpec) -> dict[str, Figure]:
    """Every comparison the spec declares, by file stem."""
    return {comp.stem: comparison_figure(table, comp, spec) for comp in spec.comparisons}


def _single(draw: Callable[[Axes], None], size: tuple[float, float] = (6.0, 4.2)) -> Figure:
    fig = Figure(figsize=size, layout="constrained")
    draw(fig.add_subplot())
    return fig


def spacing_figure(table: pd.DataFrame, model: str, spacing: float = 120.0, *,
                   flanker_dset: str | None = None) -> Figure:
    """Figures (a)/(b): accuracy vs target eccentricity at one spacing; curves a, xa, ax, xax."""
    rows = model_rows(table, model)
    return _single(lambda ax: _panel_spacing(ax, rows, spacing, flanker_dset))


def center_target_figure(table: pd.DataFrame, model: str, target_ecc: float = 0.0, *,
                         flanker_dset: str | None = None) -> Figure:
    """Figure (c): target fixed at `target_ecc`; accuracy vs flanker eccentricity; curves a, ax, xax."""
    rows = model_rows(table, model)
    return _single(lambda ax: _panel_center(ax, rows, target_ecc, flanker_dset))


def far_target_figure(table: pd.DataFrame, model: str, target_ecc: float = 720.0, *,
                      flanker_dset: str | None = None) -> Figure:
    """Figure (d): target fixed at `target_ecc`; accuracy vs target - flanker eccentricity; curves a, xa."""
    rows = model_rows(table, model)
    return _single(lambda ax: _panel_far(ax, rows, target_ecc, flanker_dset))


def paper_figures(table: pd.DataFrame, model: str, spec: FigureSpec = FigureSpec(), *,
                  flanker_dset: str | None = None) -> Figure:
    """The four figures of one model side by side (two spacings, target at the centre, far out)."""
    rows = model_rows(table, model)
    panels: list[Callable[[Axes], None]] = [
        *(lambda ax, s=s: _panel_spacing(ax, rows, s, flanker_dset) for s in spec.spacings),
        lambda ax: _panel_center(ax, rows, spec.center_target, flanker_dset),
        lambda ax: _panel_far(ax, rows, spec.far_target, flanker_dset)]
    ncols = 2
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(11.0, 4.0 * nrows), layout="constrained")
    for i, draw in enumerate(panels):
        draw(fig.add_subplot(nrows, ncols, i + 1))
    return fig


def heatmap_figure(table: pd.DataFrame, model: str, *, flanker_dset: str | None = None) -> Figure:
    """Accuracy over target x flanker eccentricity, one panel per flanker type (grey: no result;
    x: planned but failed or missing)."""
    rows = model_rows(table, model)
    none, fl = _split(rows, flanker_dset)
    parts = [(0, "no flanker (a)", none)] + [
        (t, title, fl[fl["flanker_type"] == t]) for t, title in ((1, "one flanker (xa, ax)"), (2, "two flankers (xax)"))]
    parts = [p for p in parts if not p[2].empty]
    targets = np.unique(rows["target_ecc"].dropna().to_numpy(float))
    fig = Figure(figsize=(4.2 * len(parts) + 0.8, 4.2), layout="constrained")
    image = None
    for i, (ftype, title, df) in enumerate(parts):
        ax = fig.add_subplot(1, len(parts), i + 1)
        flankers = np.unique(df["flanker_ecc"].dropna().to_numpy(float)) if ftype else np.array([np.nan])
        grid = np.full((len(flankers), len(targets)), np.nan)
        planned = np.zeros_like(grid, dtype=bool)
        for _, r in df.iterrows():
            j = int(np.argmin(np.abs(targets - r["target_ecc"])))
            k = 0 if not ftype else int(np.argmin(np.abs(flankers - r["flanker_ecc"])))
            planned[k, j] = True
            if np.isfinite(r["accuracy"]):
                grid[k, j] = r["accuracy"]
        image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", vmin=0, vmax=1,
                          cmap=colormaps["viridis"].with_extremes(bad="0.88"), interpolation="nearest")
        for k, j in zip(*np.nonzero(planned & ~np.isfinite(grid)), strict=True):
            ax.text(j, k, "×", ha="center", va="center", color="#b2182b", fontsize=8)
        step = max(1, len(targets) // 7)
        ax.set_xticks(range(0, len(targets), step), [f"{v:g}" for v in targets[::step]], fontsize=7)
        ax.set_xlabel("target eccentricity (px)")
        if ftype:
            fstep = max(1, len(flankers) // 8)
            ax.set_yticks(range(0, len(flankers), fstep), [f"{v:g}" for v in flankers[::fstep]], fontsize=7)
            ax.set_ylabel("flanker eccentricity (px)")
        else:
            ax.set_yticks([])
        ax.set_title(title, fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=fig.axes, label="accuracy", shrink=0.9)
    fig.suptitle(_title(rows, "accuracy by condition", flanker_dset).replace("\n", " - "), fontsize=10)
    return fig


def training_figure(curves: pd.DataFrame, model: str, selection: pd.DataFrame | None = None) -> Figure:
    """Train (solid) and validation (dashed) loss and accuracy per epoch for every learning rate of
    one model; the chosen one drawn thick. Candidates without metrics are named in a note."""
    mine = curves[curves["model"] == model] if not curves.empty else curves
    sel = selection[selection["model"] == model] if selection is not None and not selection.empty else None
    chosen = set(mine.loc[mine["chosen"].astype(bool), "hash"]) if not mine.empty else set()
    if sel is not None:
        chosen |= set(sel.loc[sel["chosen"].astype(bool), "hash"])
    fig = Figure(figsize=(10.0, 3.8), layout="constrained")
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    lrs = sorted(set(mine["learning_rate"])) if not mine.empty else []
    colors = dict(zip(lrs, [f"C{i}" for i in range(len(lrs))], strict=True))
    for (lr, h), run in (mine.groupby(["learning_rate", "hash"], sort=True) if not mine.empty else []):
        is_chosen = h in chosen
        style = {"color": colors[lr], "lw": 2.6 if is_chosen else 1.1, "alpha": 1.0 if is_chosen else 0.6}
        name = f"lr {lr:g}" + (" (chosen)" if is_chosen else "")
        for ax, metric in zip(axes, ("loss", "acc"), strict=True):
            for split, ls in (("train", "-"), ("val", "--")):
                key = f"{split}/{metric}"
                if key in run and run[key].notna().any():
                    ax.plot(run["epoch"], run[key], ls=ls, label=f"{name} {split}", **style)
    notes = []
    if sel is not None:
        for _, r in sel.iterrows():
            if r["hash"] not in set(mine["hash"] if not mine.empty else []):
                notes.append(f"lr {r['learning_rate']:g}: {r['state']}" + (f" ({r['error']})" if r["error"] else ""))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.25)
        if ax.lines:
            ax.legend(fontsize=7, frameon=False)
    if notes:
        axes[1].text(0.02, 0.02, "no metrics:\n" + "\n".join(notes), transform=axes[1].transAxes, fontsize=7,
                     va="bottom", color="0.25", gid=NOTE_GID)
    fig.suptitle(f"{model}: training (solid) and validation (dashed)", fontsize=10)
    return fig


# ----------------------------------------------------------------------------- stimuli
def text_glyph(char: str, size: int = 28) -> np.ndarray:
    """A white character on black (uint8 size x size), a stand-in digit when MNIST is not at hand."""
    from PIL import Image, ImageDraw, ImageFont

    big = 4 * size
    img = Image.new("L", (big, big))
    try:
        font = ImageFont.load_default(size=int(big * 0.9))
    except TypeError:  # Pillow < 10.1: a small bitmap font
        font = ImageFont.load_default()
    ImageDraw.Draw(img).text((big / 2, big / 2), char, fill=255, font=font, anchor="mm")
    return np.array(img.resize((size, size), Image.BILINEAR))  # a writable copy (torch warns otherwise)


def gallery_conditions(target_ecc: float, spacing: float) -> dict[str, tuple[int, float | None]]:
    """(flanker_type, flanker_ecc) of a, xa, ax, xax for a target: flankers `spacing` towards the
    centre (xa, when that is nearer the centre) or away from it (ax, xax)."""
    out_dir = 1.0 if target_ecc >= 0 else -1.0
    inner = target_ecc - out_dir * spacing
    conds: dict[str, tuple[int, float | None]] = {"a": (0, None), "ax": (1, target_ecc + out_dir * spacing),
                                                  "xax": (2, target_ecc + out_dir * spacing)}
    if abs(inner) < abs(target_ecc):
        conds["xa"] = (1, inner)
    return {k: conds[k] for k in LABELS if k in conds}


def gallery_figure(target: np.ndarray, flanker: np.ndarray, cfg: Any, *,
                   target_eccs: Sequence[float] = (0.0, 360.0, 720.0), spacing: float = 120.0) -> Figure:
    """The field and every crop for a, xa, ax and xax at a few target eccentricities.

    target, flanker: uint8 (H, W) images (e.g. an even and an odd MNIST digit); cfg: a
    `ecc.stimuli.StimulusConfig`. A configuration the generator refuses is shown as a note."""
    from ecc.stimuli import InvalidPlacement, canvas, render

    target, flanker = np.array(target, copy=True), np.array(flanker, copy=True)  # torch wants writable arrays
    rows = []
    for t in target_eccs:
        conds = gallery_conditions(float(t), spacing)
        for label in LABELS:
            rows.append((float(t), label, conds.get(label)))
    # Validate each configuration, then render the valid ones in one batch per flanker type.
    shown: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    refused: dict[int, str] = {}
    by_type: dict[int, list[int]] = {}
    for i, (t, _, cond) in enumerate(rows):
        try:
            if cond is None:
                raise InvalidPlacement(f"no flanker position nearer the centre at spacing {spacing:g}")
            field = canvas(target, cfg, target_ecc=t, flanker=flanker, flanker_ecc=cond[1], flanker_type=cond[0])
        except InvalidPlacement as e:
            refused[i] = str(e)
            continue
        shown[i] = (field, np.empty(0))
        by_type.setdefault(cond[0], []).append(i)
    for ftype, idx in by_type.items():
        k = len(idx)
        crops = render(np.repeat(target[None], k, 0), cfg, target_ecc=[rows[i][0] for i in idx],
                       flankers=np.repeat(flanker[None], k, 0) if ftype else None, flanker_type=ftype,
                       flanker_ecc=[rows[i][2][1] for i in idx] if ftype else None, device="cpu")  # type: ignore[index]
        for i, crop in zip(idx, crops, strict=True):
            shown[i] = (shown[i][0], crop)

    n, c, gap = cfg.num_scales, cfg.crop_size, max(2, cfg.crop_size // 15)
    fig = Figure(figsize=(0.75 * n + 5.5, 0.62 * len(rows) + 0.8), layout="constrained")
    grid = fig.add_gridspec(len(rows), 2, width_ratios=[5.0, 0.75 * n])
    band = max(cfg.digit_height, cfg.flanker_height)
    mid = cfg.field_size // 2
    centres = [j * (c + gap) + (c - 1) / 2 for j in range(n)]
    for i, (t, label, _) in enumerate(rows):
        ax, cax = fig.add_subplot(grid[i, 0]), fig.add_subplot(grid[i, 1])
        for a in (ax, cax):
            a.set_xticks([])
            a.set_yticks([])
        ax.set_ylabel(f"{label}\nt={t:g}", rotation=0, ha="right", va="center", fontsize=8)
        if i == len(rows) - 1:
            cax.set_xticks(centres, [str(s) for s in cfg.crop_sides], fontsize=6, rotation=90)
            cax.set_xlabel("crop side in the field (px)", fontsize=7)
        if i in refused:
            ax.text(0.5, 0.5, textwrap.fill(f"not shown: {refused[i]}", 90), ha="center", va="center",
                    fontsize=6, transform=ax.transAxes)
            cax.set_axis_off()
            continue
        field, crops = shown[i]
        strip = field[mid - band:mid + band]
        k = max(1, cfg.field_size // 480)  # shown at most ~480 px wide: block maxima keep thin strokes
        strip = strip[:strip.shape[0] // k * k, :strip.shape[1] // k * k]
        strip = strip.reshape(strip.shape[0] // k, k, strip.shape[1] // k, k).max(axis=(1, 3))
        ax.imshow(strip, cmap="gray", vmin=0, vmax=255, aspect="auto")
        montage = np.full((c, n * (c + gap) - gap), 60, np.uint8)  # crops side by side on grey
        for j in range(n):
            montage[:, j * (c + gap):j * (c + gap) + c] = crops[j]
        cax.imshow(montage, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    fig.suptitle(f"stimuli: field (centre band) and the {n} crops; spacing {spacing:g} px", fontsize=10)
    return fig


def stimulus_config(exp_dir: str | Path) -> Any:
    """The StimulusConfig of the experiment's first training run (the defaults without one)."""
    from ecc.stimuli import StimulusConfig

    try:
        plan = tbl.read_plan(exp_dir)
    except (FileNotFoundError, CorruptFileError):
        return StimulusConfig()
    for entry in plan.get("train", []):
        stim = (entry.get("config") or {}).get("stimulus") if isinstance(entry, Mapping) else None
        if isinstance(stim, Mapping):
            known = {f.name for f in fields(StimulusConfig)}
            kw = {k: (float(v) if k == "chevron" else v) for k, v in stim.items() if k in known}
            return StimulusConfig(**kw)
    return StimulusConfig()


# ----------------------------------------------------------------------------- all figures of an experiment
def slug(text: str) -> str:
    """A file-name-safe version of a model name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "model"


def save_figure(fig: Figure, path_stem: Path, formats: Sequence[str] = ("png", "pdf"), dpi: int = 120) -> list[Path]:
    """Write `fig` as path_stem.<format> for each format, atomically."""
    out = []
    engine = fig.get_layout_engine()
    try:
        for fmt in formats:
            path = path_stem.with_name(f"{path_stem.name}.{fmt}")
            out.append(atomic_write(path, lambda f, fmt=fmt: fig.savefig(f, format=fmt, dpi=dpi)))
            fig.set_layout_engine("none")  # laid out once by the first save: the others reuse it (faster)
    finally:
        fig.set_layout_engine(engine)
    return out


def png_bytes(fig: Figure, dpi: int = 72, colors: int | None = 64) -> bytes:
    """The figure as PNG bytes, quantised to a palette of `colors` (None: full colour). A 64-colour
    palette keeps lines and text crisp at a third of the size: for outputs stored in notebooks."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if colors is None:
        return buf.getvalue()
    image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    image = image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def mnist_digits(source: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The first even and the first odd MNIST test digit (a target and a flanker for the gallery)."""
    from ecc.sources import mnist_split

    images, labels = mnist_split("test", source)
    return images[int(np.argmax(labels % 2 == 0))], images[int(np.argmax(labels % 2 == 1))]


def draw_all(exp_dir: str | Path, table: pd.DataFrame | None = None, selection: pd.DataFrame | None = None,
             figure_spec: Any = None, out_dir: str | Path | None = None, *, curves: pd.DataFrame | None = None,
             digits: tuple[np.ndarray, np.ndarray] | None = None, stimulus: Any = None, source: Any = None,
             formats: Sequence[str] = ("png", "pdf"), dpi: int = 120) -> list[Path]:
    """Every figure of an experiment under `out_dir` (default `<exp_dir>/figures/`); returns the paths.

    Per evaluated model, in `<model>/`: spacing_<S>, target_<T> (centre and far), heatmap; the
    spec's comparisons in `compare/<Comparison.stem>`; plus training (every model in the plan or the selection). `stimuli` (the gallery) from `digits` =
    (target image, flanker image), or MNIST digits from `source` (an ecc.sources.SourceConfig);
    without either there is no gallery. `figure_spec`: a FigureSpec (or sweeps.spec.FigureSpec, or
    a mapping); default the experiment's spec.json "figures", else the demo's. `stimulus`: the
    StimulusConfig for the gallery; default the plan's first. Tables not given are collected from
    exp_dir. Flanker datasets other than MNIST get a `_<dset>` suffix."""
    exp_dir = Path(exp_dir)
    table = tbl.collect(exp_dir) if table is None else table
    selection = tbl.selection_table(exp_dir) if selection is None else selection
    curves = tbl.training_curves(exp_dir) if curves is None else curves
    spec = FigureSpec.for_experiment(exp_dir) if figure_spec is None else FigureSpec.coerce(figure_spec)
    out = Path(out_dir) if out_dir is not None else exp_dir / "figures"
    paths: list[Path] = []

    def emit(fig: Figure, stem: Path) -> None:
        paths.extend(save_figure(fig, stem, formats, dpi))
        fig.clear()

    evaluated = table[(table["model_hash"] != "") & table["flanker_type"].notna()]
    runs = evaluated.drop_duplicates("model_hash")[["model", "model_hash", "learning_rate"]]
    names = runs["model"].value_counts()
    for _, run in runs.iterrows():
        folder = slug(run["model"]) + (f"_lr{run['learning_rate']:g}" if names[run["model"]] > 1 else "")
        rows = model_rows(table, run["model_hash"])
        for dset in flanker_dsets(rows) or [None]:
            sfx = "" if dset in (None, "MNIST") else f"_{slug(dset)}"
            base = out / folder
            for s in spec.spacings:
                emit(spacing_figure(table, run["model_hash"], s, flanker_dset=dset), base / f"spacing_{s:g}{sfx}")
            emit(center_target_figure(table, run["model_hash"], spec.center_target, flanker_dset=dset),
                 base / f"target_{spec.center_target:g}{sfx}")
            emit(far_target_figure(table, run["model_hash"], spec.far_target, flanker_dset=dset),
                 base / f"target_{spec.far_target:g}{sfx}")
            emit(heatmap_figure(table, run["model_hash"], flanker_dset=dset), base / f"heatmap{sfx}")
    if len(evaluated):
        for comp in spec.comparisons:
            emit(comparison_figure(table, comp, spec), out / "compare" / comp.stem)
    trained = list(dict.fromkeys([*curves.get("model", pd.Series(dtype=str)), *selection.get("model", [])]))
    for model in trained:
        folder = slug(model)
        emit(training_figure(curves, model, selection), out / folder / "training")
    if digits is None and source is not None:
        try:
            digits = mnist_digits(source)
        except Exception as e:  # the gallery is a nicety: never lose the other figures over it
            logger.warning("no stimulus gallery: MNIST could not be loaded (%s)", e)
    if digits is not None:
        cfg = stimulus if stimulus is not None else stimulus_config(exp_dir)
        gallery_spacing = spec.spacings[0] if spec.spacings else 120.0
        emit(gallery_figure(digits[0], digits[1], cfg, spacing=gallery_spacing,
                            target_eccs=sorted({0.0, spec.far_target / 2, spec.far_target})), out / "stimuli")
    return paths
