"""The stimulus gallery: the field and every crop for a, xa, ax and xax at a few target eccentricities."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from core.atomic import CorruptFileError
from core.identity import from_jsonable
from ecc.conditions import LABELS, condition_label
from ecc.geometry import StimulusConfig

from . import experiment


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


def mnist_digits(source: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The first even and the first odd MNIST test digit (a target and a flanker for the gallery)."""
    from ecc.sources import mnist_split

    images, labels = mnist_split("test", source)
    return images[int(np.argmax(labels % 2 == 0))], images[int(np.argmax(labels % 2 == 1))]


def gallery_conditions(target_ecc: float, spacing: float) -> dict[str, tuple[int, float | None]]:
    """(flanker_type, flanker_ecc) of a, xa, ax, xax for a target: flankers `spacing` towards the
    centre (xa, when that is nearer the centre) or away from it (ax, xax)."""
    out_dir = 1.0 if target_ecc >= 0 else -1.0
    outer, inner = target_ecc + out_dir * spacing, target_ecc - out_dir * spacing
    conds: dict[str, tuple[int, float | None]] = {"a": (0, None), "ax": (1, outer), "xax": (2, outer)}
    if condition_label(1, target_ecc, inner) == "xa":  # not when the inner side is as far out (target 0)
        conds["xa"] = (1, inner)
    return {k: conds[k] for k in LABELS if k in conds}


def gallery_figure(target: np.ndarray, flanker: np.ndarray, cfg: Any, *,
                   target_eccs: Sequence[float] = (0.0, 360.0, 720.0), spacing: float = 120.0) -> Figure:
    """The field and every crop for a, xa, ax and xax at a few target eccentricities.

    target, flanker: uint8 (H, W) images (e.g. an even and an odd MNIST digit); cfg: a
    `ecc.geometry.StimulusConfig`. A configuration the generator refuses is shown as a note."""
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
    try:
        plan = experiment.read_plan(exp_dir)
    except (FileNotFoundError, CorruptFileError):
        return StimulusConfig()
    return from_jsonable(StimulusConfig, plan.train[0].config["stimulus"]) if plan.train else StimulusConfig()
