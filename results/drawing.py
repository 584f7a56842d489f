"""What every figure of the results shares: a Curve (accuracy with its Wilson interval), one model's
rows of the results table, the drawing of curves (error bars, chance line, a note naming what is left
out), and saving figures (PNG + PDF atomically, or PNG bytes for a notebook).

A curve with no data is left out and named in a note on the axes (a Text with gid "notes"); a failed
or missing point is a gap (NaN) in its curve. Each curve's data line carries its label as gid ("a",
"xa", ..., "chance"). Figures are `matplotlib.figure.Figure` objects (no pyplot state).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from core.atomic import atomic_write
from ecc.conditions import LABELS, evaluated, num_classes

STYLE = {  # label -> colour and marker (the original's markers: > for xa, < for ax, s for xax)
    "a": {"color": "#222222", "marker": "o"},
    "xa": {"color": "#e66101", "marker": ">"},
    "ax": {"color": "#1f78b4", "marker": "<"},
    "xax": {"color": "#b2182b", "marker": "s"},
}
NOTE_GID, CHANCE_LABEL = "notes", "chance"


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


def curve(label: str, rows: pd.DataFrame, x: pd.Series) -> Curve:
    """Rows (with their x) -> a curve sorted by x; one point per x (a done job wins)."""
    df = rows.assign(_x=np.asarray(x, dtype=float), _rank=rows["state"].map(lambda s: s != "done"))
    df = df[np.isfinite(df["_x"])].sort_values(["_x", "_rank"], kind="stable").drop_duplicates("_x")
    return Curve(label, df["_x"].to_numpy(float), df["accuracy"].to_numpy(float),
                 df["ci_low"].to_numpy(float), df["ci_high"].to_numpy(float), list(df["state"]))


def model_rows(table: pd.DataFrame, model: str) -> pd.DataFrame:
    """The evaluation rows of one model run, named by its model_hash or its (unique) model name."""
    ev = evaluated(table)
    rows = ev[ev["model_hash"] == model]
    if rows.empty:
        rows = ev[ev["model"] == model]
    if rows.empty:
        raise ValueError(f"model {model!r} has no evaluation rows; models: {sorted(set(ev['model']))}")
    if rows["model_hash"].nunique() > 1:
        raise ValueError(f"model {model!r} was evaluated as several runs; name one by its model_hash: "
                         f"{sorted(set(rows['model_hash']))}")
    return rows


def flanker_dsets(rows: pd.DataFrame) -> list[str]:
    """Flanker datasets of a model's flanked conditions (type 0 does not depend on it)."""
    flanked = rows[rows["flanker_type"].fillna(0) > 0]
    return sorted(set(flanked["flanker_dset"].dropna())) or sorted(set(rows["flanker_dset"].dropna()))


def split_flanked(rows: pd.DataFrame, flanker_dset: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
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


# ----------------------------------------------------------------------------- drawing
def chance_level(rows: pd.DataFrame) -> float:
    """1 / the number of classes of the rows' models."""
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


def draw_curves(ax: Axes, curves: dict[str, Curve], chance: float, *, constant: str | None = None) -> None:
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


def single(draw: Callable[[Axes], None], size: tuple[float, float] = (6.0, 4.2)) -> Figure:
    fig = Figure(figsize=size, layout="constrained")
    draw(fig.add_subplot())
    return fig


# ----------------------------------------------------------------------------- saving
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
