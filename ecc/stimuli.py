"""Multiscale crowding stimuli, rendered: `render`, the crops of the original algorithm
(docs/original.md), bit-exact, computed without the canvas (resample.py), batched in
torch on the CPU or a GPU; `canvas`, the whole field; `normalize` turns stored uint8 crops into the
model input (contrast normalisation, then -0.5), as the original did at load time.

The geometry and the placement rules are torch-free in ecc.geometry (re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from core.cli import check_choice

from .geometry import (  # noqa: F401 (re-exported: the geometry's users may import it from here)
    CONTRAST_NORMS,
    FLANKER_TYPES,
    FOVEAS,
    InvalidPlacement,
    StimulusConfig,
    centred_bounds,
    check_placement,
    check_positions,
    check_shift_spacing,
    check_spacing,
    object_eccs,
    sample_random_shifts,
)
from .resample import Placed, compose_canvas, resize_crops, square


# ------------------------------------------------------------------------------ render
def _per_image(value: float | Sequence[float] | np.ndarray | None, n: int, name: str) -> np.ndarray:
    if value is None:
        return np.full(n, np.nan)
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"{name} must be a number or one value per image ({n}), got shape {arr.shape}")
    return arr


def _as_images(x: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    arr = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.dtype != np.uint8 or arr.ndim != 3:
        raise ValueError(f"{name} must be uint8 of shape (N, H, W), got {arr.dtype} {arr.shape}")
    return arr


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def render(targets: np.ndarray, cfg: StimulusConfig, *, target_ecc: float | Sequence[float] | np.ndarray,
           flankers: np.ndarray | None = None, flanker_ecc: float | Sequence[float] | np.ndarray | None = None,
           flanker_type: int = 0, backgrounds: Sequence[np.ndarray] | np.ndarray | None = None,
           device: str | torch.device | None = None, dtype: torch.dtype | None = None,
           batch_size: int = 256) -> np.ndarray:
    """Multiscale stimuli, uint8 of shape (N, num_scales, crop_size, crop_size).

    targets, flankers: uint8 (N, H, W), target i paired with flanker i. target_ecc, flanker_ecc:
    horizontal offsets of the centres from the field's centre in pixels (positive to the right),
    a number or one per image. flanker_type: 0 none, 1 one at flanker_ecc, 2 also its mirror
    about the target. backgrounds: optional grayscale images (one per target) resized to the field
    behind the objects. device: default a GPU when present. dtype: float64 (bit-exact, the
    default on every device) or float32 (within 1 gray level, faster)."""
    targets = _as_images(targets, "targets")
    n = len(targets)
    te = _per_image(target_ecc, n, "target_ecc")
    check_choice("flanker_type", flanker_type, FLANKER_TYPES, InvalidPlacement)
    fe = _per_image(flanker_ecc, n, "flanker_ecc")
    if flanker_type:
        if flankers is None:
            raise ValueError(f"flanker_type {flanker_type} needs flanker images")
        flankers = _as_images(flankers, "flankers")
        if len(flankers) != n:
            raise ValueError(f"got {n} targets but {len(flankers)} flankers; target i is paired with flanker i")
    if backgrounds is not None and len(backgrounds) != n:
        raise ValueError(f"got {n} targets but {len(backgrounds)} backgrounds")
    # Validate every image before any work; the distinct positions are few (grid) or all valid (sampled).
    for t, f in {(float(a), float(b)) for a, b in zip(te, fe, strict=True)}:
        check_placement(cfg, t, flanker_type, None if math.isnan(f) else f)

    device = torch.device(device) if device is not None else default_device()
    # float64 on every device: datasets must not depend on where they were built (a GPU in float32
    # would differ by a gray level here and there). float32 is an explicit, faster option.
    dtype = dtype or torch.float64
    out = np.empty((n, *cfg.shape), dtype=np.uint8)
    step = 1 if backgrounds is not None else max(1, batch_size)
    for start in range(0, n, step):
        sl = slice(start, min(n, start + step))
        with torch.no_grad():
            objects = _objects(cfg, targets[sl], te[sl], flankers[sl] if flanker_type else None, fe[sl],
                               flanker_type, device, dtype)
            if backgrounds is not None:
                canvas = compose_canvas(cfg, objects, background=np.asarray(backgrounds[start]))
                objects = [Placed(torch.as_tensor(canvas[None], dtype=dtype, device=device),
                                   torch.zeros(1, dtype=torch.int64, device=device), 0)]
            out[sl] = resize_crops(cfg, objects).cpu().numpy()
    return out


def _objects(cfg: StimulusConfig, targets: np.ndarray, te: np.ndarray, flankers: np.ndarray | None,
             fe: np.ndarray, flanker_type: int, device: torch.device, dtype: torch.dtype) -> list[Placed]:
    """Squared target and flanker images with their boxes in the field."""
    half = cfg.field_size / 2.0

    def place(pixels: torch.Tensor, ecc: np.ndarray, size: int) -> Placed:
        left = np.trunc(half - size / 2.0 + ecc).astype(np.int64)  # int() of the original
        return Placed(pixels, torch.as_tensor(left, device=device), centred_bounds(cfg.field_size, size)[0],
                       uniform=bool((left == left[0]).all()))

    t_img = torch.as_tensor(targets, device=device).to(dtype)
    objs = [place(square(t_img, cfg.digit_height), te, cfg.digit_height)]
    if flanker_type:
        f_img = square(torch.as_tensor(flankers, device=device).to(dtype), cfg.flanker_height)
        for ecc in object_eccs(te, flanker_type, fe):  # type: ignore[arg-type]
            objs.append(place(f_img, ecc, cfg.flanker_height))
    return objs


def canvas(target: np.ndarray, cfg: StimulusConfig, *, target_ecc: float, flanker: np.ndarray | None = None,
           flanker_ecc: float | None = None, flanker_type: int = 0,
           background: np.ndarray | None = None) -> np.ndarray:
    """The whole field (uint8 field_size^2) of one stimulus, for sample pictures."""
    check_placement(cfg, target_ecc, flanker_type, flanker_ecc)
    fl = _as_images(np.asarray(flanker)[None], "flanker") if flanker_type else None
    objs = _objects(cfg, _as_images(np.asarray(target)[None], "target"), np.array([float(target_ecc)]), fl,
                    np.array([np.nan if flanker_ecc is None else float(flanker_ecc)]), flanker_type,
                    torch.device("cpu"), torch.float64)
    return compose_canvas(cfg, objs, 0, background)


# --------------------------------------------------------------------------- model input
def normalize(crops: np.ndarray | torch.Tensor, contrast_norm: str, cfg: StimulusConfig) -> np.ndarray | torch.Tensor:
    """uint8 crops (..., num_scales, C, C) -> float32 model input, as the original's loader:
    `None`: x / 255; `areafactor`: each crop that is not all black divided by its max and by
    `cfg.area_factor(i)`; then both shifted by -0.5. Returns the input's kind (numpy or torch)."""
    check_choice("contrast_norm", contrast_norm, CONTRAST_NORMS)
    is_numpy = not isinstance(crops, torch.Tensor)
    x = torch.as_tensor(np.asarray(crops)) if is_numpy else crops
    if x.shape[-3:] != cfg.shape:
        raise ValueError(f"crops of shape {tuple(x.shape)} do not match the config's {cfg.shape}")
    x = x.to(torch.float32)
    if contrast_norm == "None":
        x = x * (1.0 / 255)
    else:
        peak = x.amax(dim=(-1, -2), keepdim=True)
        factor = torch.tensor([cfg.area_factor(i) for i in range(cfg.num_scales)], dtype=torch.float32,
                              device=x.device).view(-1, 1, 1)
        x = torch.where(peak > 0, x / peak.clamp_min(1) / factor, torch.zeros((), device=x.device))
    x = x - 0.5
    return x.numpy() if is_numpy else x
