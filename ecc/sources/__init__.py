"""Where the image data comes from: MNIST (embedded, IDX folder, download), flanker sets (letters, notMNIST, Omniglot), backgrounds.

One module per provider, this package's API gathered here:
  config.py       SourceConfig (where data lives), SPLITS / PARITIES, the flanker sets (FlankerSet:
                  their drawn height and trimming), the split rule
  idx.py          IDX files (MNIST's format): read_idx, write_idx
  mnist.py        load_mnist (embedded zarr, IDX folder, download + MD5), fingerprint, mnist_split
  flankers.py     pairs (targets with their flankers), flanker_images (letters, notMNIST, Omniglot)
  letters.py      letters A-J rendered from matplotlib's fonts: a flanker set with nothing to download
  backgrounds.py  MIT Places photos for the original's `place` option

Loaded arrays are cached per process and read-only; take a copy to modify them.
"""

from __future__ import annotations

from collections.abc import Sequence

from .backgrounds import PLACES_URL, background_paths, load_gray, places_present
from .config import (
    FLANKER_DSETS,
    FLANKER_SETS,
    PARITIES,
    SPLITS,
    FlankerSet,
    MissingDataError,
    SourceConfig,
    flanker_set,
)
from .flankers import FLANKER_HELP, Pairs, flanker_images, flankers_present, pairs
from .idx import read_idx, write_idx
from .mnist import (
    MNIST_ARRAYS,
    MNIST_FINGERPRINT,
    MNIST_IDX_NAMES,
    MNIST_PAYLOAD_MD5,
    ChecksumMismatch,
    DownloadError,
    MnistArrays,
    download_mnist,
    fingerprint,
    load_mnist,
    mnist_split,
)

__all__ = [
    "FLANKER_DSETS", "FLANKER_SETS", "MNIST_ARRAYS", "MNIST_FINGERPRINT", "MNIST_IDX_NAMES", "MNIST_PAYLOAD_MD5", "PARITIES",
    "SPLITS", "ChecksumMismatch", "DownloadError", "FlankerSet", "MissingDataError", "MnistArrays", "Pairs",
    "SourceConfig", "background_paths", "download_mnist", "fingerprint", "flanker_images", "flanker_set", "flankers_present",
    "load_gray", "load_mnist", "mnist_split", "pairs", "places_present", "read_idx", "require", "write_idx",
]


def require(flanker_dsets: Sequence[str], places: bool = False, source: SourceConfig | None = None) -> None:
    """Raise MissingDataError naming every set that is needed but absent, what to get, where to put it."""
    source = source or SourceConfig()
    missing = [f"{name}: get the {FLANKER_HELP[name]}, and put them in {source.flanker_dir(name)}"
               for name in dict.fromkeys(flanker_dsets) if not flankers_present(name, source)]
    if places and not places_present(source):
        missing.append(f"places: register at {PLACES_URL}, download MIT Places and unzip it under "
                       f"{source.places_dir} (one folder of images per category)")
    if missing:
        raise MissingDataError("data that is needed is not there (or set $CROWDING_DATA to the folder that "
                               "holds it):\n  " + "\n  ".join(missing))
