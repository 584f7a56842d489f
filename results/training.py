"""Training runs over epochs: every run's per-epoch metrics (metrics.jsonl) as one table, and a
figure per model with every learning rate's curves (the chosen one drawn thick)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from core.atomic import CorruptFileError, read_jsonl
from core.runs import METRICS

from . import experiment
from .drawing import NOTE_GID

logger = logging.getLogger(__name__)


def training_curves(exp_dir: str | Path) -> pd.DataFrame:
    """Every training run's per-epoch metrics, long format: model, learning_rate, hash, chosen,
    then the metrics.jsonl keys (epoch, step, train/loss, train/acc, val/loss, val/acc, ...). A torn
    last line (a run stopped mid-write) is left out; an unreadable file is skipped with a warning."""
    exp_dir = Path(exp_dir)
    plan = experiment.read_plan(exp_dir)
    chosen = {h for _, h in experiment.chosen_runs(experiment.read_selection(exp_dir) or {})}
    frames = []
    for entry in experiment.unique(plan.train):
        try:
            records = read_jsonl(exp_dir / entry.dir / METRICS)
        except CorruptFileError as e:
            logger.warning("no training curve for run %s: %s", entry.hash, e)
            continue
        if not records:
            continue
        df = pd.DataFrame(records)
        df.insert(0, "model", entry.model)
        df.insert(1, "learning_rate", entry.learning_rate)
        df.insert(2, "hash", entry.hash)
        df.insert(3, "chosen", entry.hash in chosen)
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["model", "learning_rate", "hash", "chosen", "epoch"])
    out = pd.concat(frames, ignore_index=True)
    sort = ["model", "learning_rate"] + (["epoch"] if "epoch" in out.columns else [])
    return out.sort_values(sort, kind="stable").reset_index(drop=True)


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
