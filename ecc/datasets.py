"""Stimulus datasets: a spec, its content key, and a uint8 store built once under a file lock.

A dataset is (image source, split, stimulus geometry, placement, seed). Its key hashes exactly
that, with the source's *content* fingerprint (not its path) and the generator version. On disk,
`<root>/<key>/` holds images.npy (uint8, N x S x C x C, memory-mappable), labels.npy, eccs.npy
(target and flanker eccentricity of each image), meta.json (spec, shapes, checksums) and
samples/ (the canvas and every crop of a few images, as PNG, like the original).

Whoever asks first builds it into a temporary folder and renames it into place while holding
`<root>/<key>.lock`; the others wait on the lock and then load. A dataset whose files do not match
their meta.json (truncated, edited, half-copied) is set aside and rebuilt, never used.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from PIL import Image
from tqdm import tqdm

from core.atomic import CorruptFileError, atomic_write_json, read_json
from core.identity import digest, file_digest, to_jsonable

from . import sources
from .dataset_spec import (  # noqa: F401 (re-exported: what a dataset is, beside how it is built)
    GENERATOR_VERSION,
    PLACES,
    DatasetError,
    DatasetSpec,
    dataset_key,
)
from .stimuli import canvas, render, sample_random_shifts

logger = logging.getLogger(__name__)

CHUNK = 512  # images rendered per step while building
SAMPLES = 3  # images whose canvas and crops are saved as PNG


@dataclass
class StimulusSet:
    """Images (uint8, N x S x C x C), labels (int64) and the placement of every image."""

    images: np.ndarray
    labels: np.ndarray
    eccs: np.ndarray  # float64 (N, 2): target and flanker eccentricity (NaN without flanker)
    spec: DatasetSpec

    def __len__(self) -> int:
        return len(self.labels)


# ---------------------------------------------------------------------------- generate
def _rng(spec: DatasetSpec) -> np.random.Generator:
    # Positions and backgrounds depend on the seed and on which data they are for, nothing else.
    return np.random.default_rng(int(digest(to_jsonable(spec.canonical()), 15), 16))


def _placements(spec: DatasetSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    cfg = spec.geometry
    if spec.random_shifts:
        target, flanker = sample_random_shifts(cfg, n, rng, spec.flanker_type, spec.flanker_ecc - spec.target_ecc)
    else:
        target = np.full(n, float(spec.target_ecc))
        flanker = np.full(n, float(spec.flanker_ecc) if spec.flanker_type else np.nan)
    return np.stack([target, flanker], axis=1)


def _inputs(spec: DatasetSpec, source: sources.SourceConfig):
    pairs = sources.pairs(spec.split, spec.parity, spec.flanker_dset, source, validation_size=spec.validation_size)
    n = len(pairs.targets) if not spec.limit else min(spec.limit, len(pairs.targets))
    if n == 0:
        raise DatasetError(f"the {spec.split} split has no {spec.parity} targets "
                           f"(validation_size={spec.validation_size})")
    rng = _rng(spec)
    eccs = _placements(spec, n, rng)
    backgrounds = None
    if spec.place == "random":
        backgrounds = sources.background_paths(source.places_dir, spec.split, n, rng)  # loaded per chunk
    flankers = pairs.flankers[:n] if spec.flanker_type else None
    return pairs.targets[:n], pairs.labels[:n].astype(np.int64), flankers, eccs, backgrounds


def _render_into(out: np.ndarray, spec: DatasetSpec, targets, flankers, eccs, backgrounds, *,
                 progress: bool, device: str | torch.device | None, desc: str) -> None:
    n = len(targets)
    bar = tqdm(total=n, desc=desc, unit="img", disable=not progress, file=sys.stderr,
               mininterval=0.5 if sys.stderr.isatty() else 30.0)
    with bar:
        for start in range(0, n, CHUNK):
            sl = slice(start, min(n, start + CHUNK))
            out[sl] = render(targets[sl], spec.geometry, target_ecc=eccs[sl, 0],
                             flankers=None if flankers is None else flankers[sl],
                             flanker_ecc=None if not spec.flanker_type else eccs[sl, 1],
                             flanker_type=spec.flanker_type,
                             backgrounds=None if backgrounds is None else
                             [sources.load_gray(p) for p in backgrounds[sl]], device=device)
            bar.update(sl.stop - sl.start)


def generate(spec: DatasetSpec, source: sources.SourceConfig | None = None, *, progress: bool = False,
             device: str | torch.device | None = None) -> StimulusSet:
    """The dataset in memory; nothing is written (on-the-fly test sets)."""
    source = source or sources.SourceConfig()
    targets, labels, flankers, eccs, backgrounds = _inputs(spec, source)
    images = np.empty((len(targets), *spec.stimulus.shape), np.uint8)
    _render_into(images, spec, targets, flankers, eccs, backgrounds, progress=progress, device=device,
                 desc=f"stimuli {spec.split}")
    return StimulusSet(images, labels, eccs, spec)


# ------------------------------------------------------------------------------ store
FILES = ("images.npy", "labels.npy", "eccs.npy")


def _check(folder: Path, key: str) -> dict:
    """meta.json of a complete, intact dataset; raises CorruptFileError otherwise."""
    meta = read_json(folder / "meta.json", ("key", "files", "n"))
    if meta is None:
        raise CorruptFileError(f"{folder} has no meta.json")
    if meta["key"] != key:
        raise CorruptFileError(f"{folder}/meta.json is for dataset {meta['key']}, not {key}")
    for name in FILES:
        path = folder / name
        want = meta["files"][name]
        if not path.exists() or path.stat().st_size != want["bytes"]:
            have = path.stat().st_size if path.exists() else "missing"
            raise CorruptFileError(f"{path}: expected {want['bytes']} bytes, found {have}")
        if file_digest(path, "sha256") != want["sha256"]:
            raise CorruptFileError(f"{path}: checksum differs from meta.json")
    return meta


def _build(spec: DatasetSpec, source: sources.SourceConfig, final: Path, key: str, *, progress: bool,
           device: str | torch.device | None) -> None:
    t0 = time.time()
    tmp = final.parent / f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # our own leftover from a crash of this pid, if any
    tmp.mkdir(parents=True)
    try:
        targets, labels, flankers, eccs, backgrounds = _inputs(spec, source)
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8,
                                           shape=(len(targets), *spec.stimulus.shape))
        _render_into(images, spec, targets, flankers, eccs, backgrounds, progress=progress, device=device,
                     desc=f"dataset {key}")
        images.flush()
        del images
        np.save(tmp / "labels.npy", labels)
        np.save(tmp / "eccs.npy", eccs)
        _write_samples(tmp / "samples", spec, targets, flankers, eccs, backgrounds)
        files = {}
        for name in FILES:
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
            files[name] = {"bytes": (tmp / name).stat().st_size, "sha256": file_digest(tmp / name, "sha256")}
        atomic_write_json(tmp / "meta.json", {
            "key": key, "spec": spec, "n": len(labels), "shape": [len(labels), *spec.stimulus.shape],
            "files": files, "generator_version": GENERATOR_VERSION, "mnist_fingerprint": sources.fingerprint(source),
            "built": {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
                      "seconds": round(time.time() - t0, 2)}})
        os.rename(tmp, final)  # atomic: the folder appears complete or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("built dataset %s: %d images in %.1f s", key, len(labels), time.time() - t0)


def _write_samples(folder: Path, spec: DatasetSpec, targets, flankers, eccs, backgrounds) -> None:
    """The canvas and each crop of the first few images, as PNG (crops as stored, uint8)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(min(SAMPLES, len(targets))):
        t, f = float(eccs[i, 0]), float(eccs[i, 1])
        bg = None if backgrounds is None else sources.load_gray(backgrounds[i])
        fl = None if flankers is None else flankers[i]
        field_img = canvas(targets[i], spec.geometry, target_ecc=t, flanker=fl,
                           flanker_ecc=None if math.isnan(f) else f, flanker_type=spec.flanker_type, background=bg)
        Image.fromarray(field_img).save(folder / f"{i}_canvas_te{t:.0f}.png")
        crops = render(targets[i:i + 1], spec.geometry, target_ecc=t, flankers=None if fl is None else fl[None],
                       flanker_ecc=None if math.isnan(f) else f, flanker_type=spec.flanker_type,
                       backgrounds=None if bg is None else [bg], device="cpu")[0]
        for s, crop in enumerate(crops):
            Image.fromarray(crop).save(folder / f"{i}_crop_{s}.png")


def read_meta(folder: str | os.PathLike) -> dict:
    """meta.json of a built dataset (spec, n, shape, checksums, who built it)."""
    meta = read_json(Path(folder) / "meta.json", ("key", "n", "shape"))
    if meta is None:
        raise DatasetError(f"{folder} is not a built dataset (no meta.json)")
    return meta


def ensure(spec: DatasetSpec, root: str | os.PathLike, source: sources.SourceConfig | None = None, *,
           progress: bool = True, device: str | torch.device | None = None) -> Path:
    """The folder of the dataset, built first if needed (once, whoever asks first)."""
    source = source or sources.SourceConfig()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    key = dataset_key(spec, source)
    final = root / key
    with FileLock(str(root / f"{key}.lock")):
        if final.exists():
            try:
                _check(final, key)
                return final
            except CorruptFileError as e:
                aside = root / f".{key}.corrupt-{int(time.time())}-{os.getpid()}"
                logger.warning("dataset %s is damaged (%s); rebuilding it", key, e)
                os.rename(final, aside)
                shutil.rmtree(aside, ignore_errors=True)
        _build(spec, source, final, key, progress=progress, device=device)
    return final


def load(spec: DatasetSpec, root: str | os.PathLike, source: sources.SourceConfig | None = None, *,
         progress: bool = True, device: str | torch.device | None = None) -> StimulusSet:
    """The dataset, built once if needed, with its images memory-mapped read-only."""
    folder = ensure(spec, root, source, progress=progress, device=device)
    images = np.load(folder / "images.npy", mmap_mode="r")
    labels = np.load(folder / "labels.npy")
    eccs = np.load(folder / "eccs.npy")
    if images.shape != (len(labels), *spec.stimulus.shape):
        raise DatasetError(f"{folder}: images of shape {images.shape} do not match the spec")
    return StimulusSet(images, labels, eccs, spec)
