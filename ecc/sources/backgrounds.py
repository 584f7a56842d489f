"""Backgrounds: grayscale scene photos (MIT Places) behind the stimuli, the original's `place` option."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
from PIL import Image

from core.cli import check_choice

from .config import IMAGE_SUFFIXES, SPLITS, MissingDataError, SourceConfig

PLACES_URL = "http://places.csail.mit.edu/downloadData.html"

# Backgrounds: each category's sorted images are cut into disjoint ranges per split, in the
# proportions of the original's offsets 0 / 7000 / 12000 of 15000 images per category.
BACKGROUND_SPLIT_FIFTEENTHS = {"train": (0, 7), "validation": (7, 12), "test": (12, 15)}


@functools.lru_cache(maxsize=4)
def _categories(folder: str) -> tuple[tuple[str, tuple[Path, ...]], ...]:
    """(category, its sorted images) for every folder directly holding images, sorted by path."""
    cats = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        images = sorted(f for f in filenames if Path(f).suffix.lower() in IMAGE_SUFFIXES)
        if images:
            rel = Path(dirpath).relative_to(folder).as_posix()
            cats.append((rel, tuple(Path(dirpath) / f for f in images)))
    return tuple(sorted(cats))


def background_paths(folder: str | os.PathLike, split: str, n: int,
                     rng: np.random.Generator | int) -> list[Path]:
    """The files of `n` backgrounds for `split`: each draws a category uniformly and takes that
    category's next unused image of the split's range (see BACKGROUND_SPLIT_FIFTEENTHS).

    The original reset its per-category counter for every image, so each category reused a
    single photo; here no image repeats within a call. A category that runs out raises."""
    check_choice("split", split, SPLITS)
    root = Path(folder).expanduser()
    cats = _categories(str(root.resolve())) if root.is_dir() else ()
    if not cats:
        raise MissingDataError(f"no background images in {root}: register at {PLACES_URL}, download MIT Places "
                               f"and unzip it under {root} (one folder of images per category, any depth)")
    rng = np.random.default_rng(rng)
    choice = rng.integers(len(cats), size=n)
    lo_f, hi_f = BACKGROUND_SPLIT_FIFTEENTHS[split]
    need = np.bincount(choice, minlength=len(cats))
    starts = [len(files) * lo_f // 15 for _, files in cats]
    for c in np.flatnonzero(need):
        name, files = cats[c]
        available = len(files) * hi_f // 15 - starts[c]
        if need[c] > available:
            raise ValueError(f"background category {name!r} in {root} has {available} {split} images (of "
                             f"{len(files)}), but {n} draws need {need[c]} of them; ask for fewer images or "
                             "give more images per category")
    used = np.zeros(len(cats), dtype=np.int64)
    out = []
    for c in choice:
        out.append(cats[c][1][starts[c] + used[c]])
        used[c] += 1
    return out


def load_gray(path: str | os.PathLike) -> np.ndarray:
    """A grayscale uint8 (H, W) image."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L")).copy()


def places_present(source: SourceConfig | None = None) -> bool:
    """Whether the backgrounds' folder (`<data_dir>/places`) holds files."""
    folder = (source or SourceConfig()).places_dir
    return folder.is_dir() and any(folder.iterdir())

