"""IDX files (MNIST's format, plain or .gz): strict reading, atomic writing, finding them in a folder."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.atomic import CorruptFileError, atomic_write_bytes


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


def find_idx(folder: Path, base: str) -> Path | None:
    """`base`, `base.gz` or the Kaggle spelling (`train-images.idx3-ubyte`) in `folder`; plain first."""
    for name in (base, base.replace("-idx", ".idx")):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def idx_folder(folder: Path, bases: Sequence[str]) -> Path | None:
    """The folder (itself or torchvision's `MNIST/raw` below it) holding all the `bases`."""
    for candidate in (folder, folder / "MNIST" / "raw"):
        if all(find_idx(candidate, b) for b in bases):
            return candidate
    return None
