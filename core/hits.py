"""Per-image records: which test images an evaluation got right (correct.npy), one bit per image.

numpy.packbits of one bool per image (big bit order), saved with np.save and written atomically.
Here, below the science, because whether an evaluation is done depends on its record being whole
(core.runs); ecc.evaluate writes it and results.stats pairs conditions with it."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import CorruptFileError, atomic_write


def write_hits(path: str | os.PathLike, hits: np.ndarray) -> Path:
    """The per-image record, atomically: np.packbits of a bool array (big bit order)."""
    packed = np.packbits(np.asarray(hits, dtype=bool))

    def write(f: Any) -> None:
        buf = io.BytesIO()
        np.save(buf, packed, allow_pickle=False)
        f.write(buf.getvalue())

    return atomic_write(path, write)


def read_hits(path: str | os.PathLike, n: int) -> np.ndarray:
    """The bool per-image record of `n` images written by `write_hits`; CorruptFileError when the
    file does not hold n bits (FileNotFoundError when there is none)."""
    path = Path(path)
    try:
        packed = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise CorruptFileError(f"{path} cannot be read: {e}") from e
    if packed.dtype != np.uint8 or packed.ndim != 1 or len(packed) != (n + 7) // 8:
        raise CorruptFileError(f"{path} holds {packed.dtype} {packed.shape}, not the {n} bits of {n} images")
    return np.unpackbits(packed, count=n).astype(bool)
