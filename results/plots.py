"""The paper's figures of one evaluated model, its accuracy heatmap, and every figure of an experiment.

Per evaluated model (docs/original.md "Training, selection, evaluation", the original's summary_utils):
  spacing_figure        x = target eccentricity; a, xa (flanker S nearer the centre), ax (S farther
                        out), xax (two flankers at spacing S)
  center_target_figure  target fixed (at 0): x = flanker eccentricity; a (constant), ax, xax
  far_target_figure     target fixed far out (720): x = target - flanker eccentricity; a (constant), xa
  heatmap_figure        accuracy over target x flanker eccentricity, one panel per flanker type
with 95% Wilson intervals as error bars and the chance line (1 / classes) (results.drawing).
`draw_all` writes these, the comparisons (results.compare), the training curves (results.training),
Bouma's law per network (results.bouma_report) and the stimulus gallery (results.gallery) under
<experiment>/figures/.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from core.layout import FIGURES
from ecc.conditions import evaluated, near

from . import bouma, bouma_report
from . import table as tbl
from .compare import comparison_figure
from .drawing import (
    Curve,
    chance_level,
    curve,
    draw_curves,
    flanker_dsets,
    model_rows,
    save_figure,
    single,
    slug,
    split_flanked,
)
from .figspec import FigureSpec
from .gallery import gallery_figure, mnist_digits, stimulus_config
from .training import training_curves, training_figure

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- the data behind each curve
def spacing_curves(rows: pd.DataFrame, spacing: float, flanker_dset: str | None = None) -> dict[str, Curve]:
    """a, xa, ax, xax against target eccentricity at one target-flanker spacing."""
    none, fl = split_flanked(rows, flanker_dset)
    at = fl[near(fl["spacing"], spacing)]
    out = {"a": curve("a", none, none["target_ecc"])}
    for label in ("xa", "ax", "xax"):
        sel = at[at["label"] == label]
        out[label] = curve(label, sel, sel["target_ecc"])
    return out


def center_curves(rows: pd.DataFrame, target_ecc: float = 0.0,
                  flanker_dset: str | None = None) -> dict[str, Curve]:
    """Target fixed (at the centre): a (one point), ax and xax against flanker eccentricity."""
    none, fl = split_flanked(rows, flanker_dset)
    at = fl[near(fl["target_ecc"], target_ecc)]
    a = none[near(none["target_ecc"], target_ecc)]
    out = {"a": curve("a", a, a["target_ecc"])}
    for label in ("ax", "xax"):
        sel = at[at["label"] == label]
        out[label] = curve(label, sel, sel["flanker_ecc"])
    return out


def far_curves(rows: pd.DataFrame, target_ecc: float = 720.0, flanker_dset: str | None = None) -> dict[str, Curve]:
    """Target fixed far out: a (one point) and xa against target - flanker eccentricity."""
    none, fl = split_flanked(rows, flanker_dset)
    at = fl[near(fl["target_ecc"], target_ecc) & (fl["label"] == "xa")]
    a = none[near(none["target_ecc"], target_ecc)]
    return {"a": curve("a", a, a["target_ecc"]), "xa": curve("xa", at, at["target_ecc"] - at["flanker_ecc"])}


# ----------------------------------------------------------------------------- one model's figures
def _title(rows: pd.DataFrame, what: str, flanker_dset: str | None) -> str:
    model, lr = rows["model"].iloc[0], rows["learning_rate"].iloc[0]
    dsets = flanker_dsets(rows)
    dset = flanker_dset or (dsets[0] if len(dsets) == 1 else None)
    extra = f", {dset} flankers" if dset and dset != "MNIST" else ""
    lr_text = f" (lr {lr:g})" if isinstance(lr, float) and math.isfinite(lr) else ""
    return f"{model}{lr_text}\n{what}{extra}"


def _panel_spacing(ax: Axes, rows: pd.DataFrame, spacing: float, flanker_dset: str | None) -> None:
    draw_curves(ax, spacing_curves(rows, spacing, flanker_dset), chance_level(rows))
    ax.set_xlabel("target eccentricity (px)")
    ax.set_title(_title(rows, f"spacing {spacing:g} px", flanker_dset), fontsize=9)


def _panel_center(ax: Axes, rows: pd.DataFrame, target_ecc: float, flanker_dset: str | None) -> None:
    draw_curves(ax, center_curves(rows, target_ecc, flanker_dset), chance_level(rows), constant="a")
    ax.set_xlabel("flanker eccentricity (px)")
    ax.set_title(_title(rows, f"target at {target_ecc:g} px", flanker_dset), fontsize=9)


def _panel_far(ax: Axes, rows: pd.DataFrame, target_ecc: float, flanker_dset: str | None) -> None:
    draw_curves(ax, far_curves(rows, target_ecc, flanker_dset), chance_level(rows), constant="a")
    ax.set_xlabel("target - flanker eccentricity (px)")
    ax.set_title(_title(rows, f"target at {target_ecc:g} px", flanker_dset), fontsize=9)


def spacing_figure(table: pd.DataFrame, model: str, spacing: float = 120.0, *,
                   flanker_dset: str | None = None) -> Figure:
    """Figures (a)/(b): accuracy vs target eccentricity at one spacing; curves a, xa, ax, xax."""
    rows = model_rows(table, model)
    return single(lambda ax: _panel_spacing(ax, rows, spacing, flanker_dset))


def center_target_figure(table: pd.DataFrame, model: str, target_ecc: float = 0.0, *,
                         flanker_dset: str | None = None) -> Figure:
    """Figure (c): target fixed at `target_ecc`; accuracy vs flanker eccentricity; curves a, ax, xax."""
    rows = model_rows(table, model)
    return single(lambda ax: _panel_center(ax, rows, target_ecc, flanker_dset))


def far_target_figure(table: pd.DataFrame, model: str, target_ecc: float = 720.0, *,
                      flanker_dset: str | None = None) -> Figure:
    """Figure (d): target fixed at `target_ecc`; accuracy vs target - flanker eccentricity; curves a, xa."""
    rows = model_rows(table, model)
    return single(lambda ax: _panel_far(ax, rows, target_ecc, flanker_dset))


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
    none, fl = split_flanked(rows, flanker_dset)
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


# ----------------------------------------------------------------------------- all figures of an experiment
def draw_all(exp_dir: str | Path, table: pd.DataFrame | None = None, selection: pd.DataFrame | None = None,
             figure_spec: FigureSpec | None = None, out_dir: str | Path | None = None, *, curves: pd.DataFrame | None = None,
             digits: tuple[np.ndarray, np.ndarray] | None = None, stimulus: Any = None, source: Any = None,
             formats: Sequence[str] = ("png", "pdf"), dpi: int = 120,
             fits: Sequence[bouma.BoumaFit] | None = None) -> list[Path]:
    """Every figure of an experiment under `out_dir` (default `<exp_dir>/figures/`); returns the paths.

    Per evaluated model, in `<model>/`: spacing_<S>, target_<T> (centre and far), heatmap; the
    spec's comparisons in `compare/<Comparison.stem>`; plus training (every model in the plan or the
    selection). `stimuli` (the gallery) from `digits` = (target image, flanker image), or MNIST digits
    from `source` (an ecc.sources.SourceConfig); without either there is no gallery. `figure_spec`:
    default the experiment's spec.json "figures", else the demo's. `stimulus`: the
    StimulusConfig for the gallery; default the plan's first. `bouma` (critical spacing against
    eccentricity) from `fits`, default results.bouma.fits of the experiment's per-seed table; none,
    with a logged reason, when no network has a critical spacing (results.bouma_report.figure_reason).
    Tables not given are collected from exp_dir. Flanker datasets other than MNIST get a `_<dset>` suffix."""
    exp_dir = Path(exp_dir)
    table = tbl.collect(exp_dir) if table is None else table
    selection = tbl.selection_table(exp_dir) if selection is None else selection
    curves = training_curves(exp_dir) if curves is None else curves
    spec = FigureSpec.for_experiment(exp_dir) if figure_spec is None else figure_spec
    out = Path(out_dir) if out_dir is not None else exp_dir / FIGURES
    paths: list[Path] = []

    def emit(fig: Figure, stem: Path) -> None:
        paths.extend(save_figure(fig, stem, formats, dpi))
        fig.clear()

    runs = evaluated(table).drop_duplicates("model_hash")[["model", "model_hash", "learning_rate"]]
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
    if len(runs):
        for comp in spec.comparisons:
            emit(comparison_figure(table, comp, spec), out / "compare" / comp.stem)
    fits = bouma.fits(exp_dir, tbl.collect(exp_dir)) if fits is None else fits
    why = bouma_report.figure_reason(fits)
    if why is None:
        emit(bouma_report.figure(fits), out / "bouma")
    else:
        logger.warning("no Bouma figure: %s", why)
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
