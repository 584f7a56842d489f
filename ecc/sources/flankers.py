"""Flanker sets (MNIST digits, letters from fonts, notMNIST, Omniglot) and the targets paired with them.

* `pairs`: targets of one parity and their flankers, target i paired with flanker i: odd MNIST
  digits, letters A-J rendered from matplotlib's fonts (letters.py, nothing to download), or
  notMNIST letters / Omniglot characters from folders a user fills (IDX files or images).
* `flanker_images`: one split of a letters, notMNIST or Omniglot set, uint8 (N, 28, 28).

How large each set is drawn next to the targets is a property of the set (config.FlankerSet:
notMNIST and Omniglot at 85/120 of the digits' flanker height, as the original), applied where
stimuli are placed (ecc.geometry.StimulusConfig.with_flankers).

Loaded arrays are cached per process and read-only; take a copy to modify them.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.atomic import CorruptFileError
from core.cli import check_choice

from . import letters
from .config import (
    FLANKER_DSETS,
    FOLDER_FLANKER_DSETS,
    IMAGE_SUFFIXES,
    PARITIES,
    SPLITS,
    VALIDATION_SIZE,
    MissingDataError,
    SourceConfig,
    flanker_set,
    split_range,
)
from .idx import find_idx, idx_folder, read_idx
from .mnist import MNIST_IDX_NAMES, mnist_split

logger = logging.getLogger(__name__)

FLANKER_HELP = {
    "notMNIST": ("notMNIST letters: build its IDX files with https://github.com/davidflanagan/notMNIST-to-MNIST "
                 "(steps 2 and 3 of its README), or unpack notMNIST_small / notMNIST_large (a folder of PNGs "
                 "per letter)"),
    "omniglot": ("Omniglot characters: clone https://github.com/brendenlake/omniglot and unzip "
                 "python/images_background.zip and python/images_evaluation.zip"),
}


@dataclass(frozen=True, eq=False)
class Pairs:
    """Targets and their flankers for one split: target i is shown with flanker i."""

    targets: np.ndarray  # uint8 (N, H, W)
    labels: np.ndarray  # int64 (N,), 0..num_classes-1
    flankers: np.ndarray | None  # uint8 (N, H', W'), or None without flankers
    num_classes: int

    def __len__(self) -> int:
        return len(self.targets)


def _cycle(images: np.ndarray, n: int, what: str) -> np.ndarray:
    """n images: the first n, repeated from the start when there are fewer."""
    if len(images) == 0:
        raise ValueError(f"no {what} to pair with {n} targets")
    return images[np.arange(n) % len(images)]


def pairs(split: str, parity: str = "even", flanker_dset: str | None = "MNIST",
          source: SourceConfig | None = None, validation_size: int = VALIDATION_SIZE,
          flanker_dir: str | os.PathLike | None = None) -> Pairs:
    """Targets (with labels) and flankers of one split.

    parity even: the even digits in order, labels digit // 2; MNIST flankers are the split's odd
    digits, target i with odd digit i (there are more odd digits than even). odd: the odd digits,
    labels (digit - 1) // 2, flankers the even digits, cycled (there are fewer). none: all digits,
    10 classes; MNIST flankers are the same images shifted by one (flanker i = image (i + 1) mod
    N), so a flanker is never its own target but may be the same digit.
    notMNIST / omniglot: flankers from `flanker_dir` (default `<data_dir>/<name>`), the same split,
    cycled when fewer than the targets. flanker_dset None: no flankers."""
    check_choice("parity", parity, PARITIES)
    if flanker_dset is not None:
        check_choice("flanker_dset", flanker_dset, FLANKER_DSETS)
    source = source or SourceConfig()
    images, digits = mnist_split(split, source, validation_size)
    even = digits % 2 == 0
    if parity == "even":
        targets, labels, others = images[even], digits[even] // 2, images[~even]
    elif parity == "odd":
        targets, labels, others = images[~even], (digits[~even] - 1) // 2, images[even]
    else:
        targets, labels, others = np.array(images), np.array(digits), np.roll(images, -1, axis=0)
    num_classes = 10 if parity == "none" else 5
    if flanker_dset is None:
        flankers = None
    elif flanker_dset == "MNIST":
        flankers = _cycle(others, len(targets), f"{split} MNIST flankers")
    else:
        pool = flanker_images(flanker_dset, split, source, validation_size, flanker_dir)
        flankers = _cycle(pool, len(targets), f"{split} {flanker_dset} flankers")
    return Pairs(targets=targets, labels=labels.astype(np.int64), flankers=flankers, num_classes=num_classes)


def flanker_images(name: str, split: str, source: SourceConfig | None = None,
                   validation_size: int = VALIDATION_SIZE, folder: str | os.PathLike | None = None) -> np.ndarray:
    """uint8 (N, 28, 28) letters, notMNIST or Omniglot images of one split, read-only.

    letters: rendered from matplotlib's fonts (letters.py), cached in `folder` (default
    `<data_dir>/letters`); `validation_size` does not apply (each split has its own glyphs).
    notMNIST / omniglot: from `folder` (default `<data_dir>/<name>`), either
    * IDX files in the MNIST naming (train-images-idx3-ubyte[.gz], t10k-images-idx3-ubyte[.gz]), as
      the original's conversion scripts produced: the same split rule as MNIST; or
    * image files (png/jpg, searched recursively, sorted): with `train/`, `validation/`, `test/`
      subfolders the split reads its own (no `validation/`: the first `validation_size` of
      `train/`); without them, a deterministic interleaved split of the sorted files in MNIST's
      proportions 11:1:2 (55000:5000:10000): of every 14 consecutive files, the first two go to
      test, the third to validation, the rest to train, so every alphabet or letter folder
      appears in every split. Images become grayscale, light on dark (an image whose border is
      mostly light, like Omniglot's black strokes on white, is inverted, because flankers are
      pasted with a maximum onto a black field), cropped to their ink for a set whose FlankerSet
      says `trim` (Omniglot, as the original's preprocess_omniglot.sh: `convert -trim`), padded
      to a square and resized to 28x28. IDX files are taken as they are (the original's
      conversion wrote them after its preprocessing)."""
    check_choice("flanker_dset", name, FLANKER_DSETS[1:])
    check_choice("split", split, SPLITS)
    source = source or SourceConfig()
    root = Path(folder).expanduser() if folder is not None else source.flanker_dir(name)
    if name == "letters":
        return letters.letter_images(split, root)
    return _flanker_images(name, str(root.resolve()), split, validation_size)


@functools.lru_cache(maxsize=8)
def _flanker_images(name: str, folder: str, split: str, validation_size: int) -> np.ndarray:
    root = Path(folder)
    idx_bases = (MNIST_IDX_NAMES["train_images"], MNIST_IDX_NAMES["test_images"])
    idx_dir = idx_folder(root, idx_bases) if root.is_dir() else None
    if idx_dir is not None:
        if split == "test":
            images = read_idx(find_idx(idx_dir, idx_bases[1]), ndim=3)  # type: ignore[arg-type]
        else:
            train = read_idx(find_idx(idx_dir, idx_bases[0]), ndim=3)  # type: ignore[arg-type]
            images = train[split_range(split, len(train), validation_size)]
    else:
        files = _image_files(root) if root.is_dir() else []
        if not files:
            raise MissingDataError(
                f"{name} flankers not found in {root}: it holds neither the IDX files "
                f"{idx_bases[0]}[.gz] and {idx_bases[1]}[.gz] nor image files ({', '.join(IMAGE_SUFFIXES)}). "
                f"Get the {FLANKER_HELP[name]}, and put them in {root} (or set --data_dir to a folder "
                f"holding {name}/).")
        files = _image_split(root, files, split, validation_size)
        if not files:
            raise MissingDataError(f"{name}: no {split} images in {root}")
        images = _stack_gray28(files, trim=flanker_set(name).trim)
    images.flags.writeable = False
    return images


def _image_files(folder: Path) -> list[Path]:
    """Image files below `folder`, sorted by their relative path."""
    found = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _image_split(root: Path, files: list[Path], split: str, validation_size: int) -> list[Path]:
    subdirs = {s for s in SPLITS if (root / s).is_dir()}
    if not subdirs:
        return [f for i, f in enumerate(files) if _interleaved_split(i) == split]
    if split in ("train", "validation") and "train" in subdirs and "validation" not in subdirs:
        train = _image_files(root / "train")  # the MNIST rule: validation = the first images of train/
        return train[split_range(split, len(train), validation_size)]
    if split in subdirs:
        return _image_files(root / split)
    raise MissingDataError(f"{root} has the split folders {', '.join(sorted(subdirs))}/ but no {split}/")


def _interleaved_split(i: int) -> str:
    """Split of the i-th sorted file of a folder without split subfolders (MNIST's 11:1:2)."""
    r = i % 14
    return "test" if r < 2 else "validation" if r == 2 else "train"


def _stack_gray28(files: Sequence[Path], trim: bool = False) -> np.ndarray:
    out, bad = [], []
    for path in files:
        try:
            out.append(_gray28(path, trim))
        except OSError as e:  # notMNIST ships a few unreadable PNGs: skip them, loudly
            bad.append(f"{path.name} ({e})")
    if bad:
        logger.warning("skipped %d unreadable image(s): %s%s", len(bad), "; ".join(bad[:5]),
                       " ..." if len(bad) > 5 else "")
    if not out:
        raise CorruptFileError(f"none of the {len(files)} image files could be read, e.g. {bad[0]}")
    return np.stack(out)


def _gray28(path: Path, trim: bool = False) -> np.ndarray:
    with Image.open(path) as im:
        a = np.asarray(im.convert("L"))
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    if border.mean() > 127:
        a, border = 255 - a, 255 - border
    if trim:
        a = _trim(a, int(np.median(border)))
    h, w = a.shape
    side = max(h, w)
    square = np.zeros((side, side), np.uint8)
    square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = a
    if side == 28:
        return square
    return np.asarray(Image.fromarray(square).resize((28, 28), Image.Resampling.BILINEAR))


def _trim(a: np.ndarray, background: int) -> np.ndarray:
    """The smallest box holding every pixel that differs from the background (ImageMagick's -trim
    without fuzz); an image with no such pixel is kept whole."""
    rows, cols = np.flatnonzero((a != background).any(1)), np.flatnonzero((a != background).any(0))
    if not len(rows):
        return a
    return a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def flankers_present(name: str, source: SourceConfig | None = None) -> bool:
    """Whether a flanker set can be read without fetching anything: MNIST and letters always,
    notMNIST / Omniglot when their folder (`<data_dir>/<name>`) holds files."""
    check_choice("flanker_dset", name, FLANKER_DSETS)
    if name not in FOLDER_FLANKER_DSETS:
        return True
    folder = (source or SourceConfig()).flanker_dir(name)
    return folder.is_dir() and any(folder.iterdir())

