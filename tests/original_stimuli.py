"""The original stimulus algorithm, written plainly: a black canvas, pastes, crops, PIL resizes.

A slow reference for tests and bench/stimuli.py: it follows docs/original.md step
by step (the original's multiscale.py with scipy's imresize = PIL BILINEAR on uint8)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def imresize(x: np.ndarray, rows: int, cols: int) -> np.ndarray:
    return np.asarray(Image.fromarray(x).resize((cols, rows), Image.BILINEAR))


def make_square(x: np.ndarray, height: int) -> np.ndarray:
    h, w = x.shape
    out = np.zeros((height, height), np.uint8)
    if h > w:
        new_w = int(w / float(h) * height)
        offset = int((height - new_w) / 2.0)
        out[:, offset:offset + new_w] = imresize(x, height, new_w)
    else:
        new_h = int(h / float(w) * height)
        offset = int((height - new_h) / 2.0)
        out[offset:offset + new_h, :] = imresize(x, new_h, height)
    return out


def box(field_size: int, size: float, ecc: float = 0.0) -> tuple[int, int, int, int]:
    half = field_size / 2.0
    return (int(half - size / 2.0), int(half + size / 2.0),
            int(half - size / 2.0 + ecc), int(half + size / 2.0 + ecc))


def build(target: np.ndarray, *, field_size: int, digit_height: int, flanker_height: int, crop_size: int,
          num_scales: int, fovea: str, chevron: float, target_ecc: float, flanker: np.ndarray | None = None,
          flanker_ecc: float | None = None, flanker_type: int = 0,
          background: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(canvas, crops uint8 (num_scales, crop, crop)) of one image, the original's way."""
    if background is not None:
        field = imresize(background, field_size, field_size).copy()
    else:
        field = np.zeros((field_size, field_size), np.uint8)
    y0, y1, x0, x1 = box(field_size, digit_height, target_ecc)
    x = make_square(target, digit_height)
    assert field[y0:y1, x0:x1].shape == x.shape
    field[y0:y1, x0:x1] = x
    if flanker_type:
        assert abs(target_ecc - flanker_ecc) >= (digit_height + flanker_height) / 2.0
        eccs = [flanker_ecc] if flanker_type == 1 else [flanker_ecc, 2 * target_ecc - flanker_ecc]
        f = make_square(flanker, flanker_height)
        for ecc in eccs:
            y0, y1, x0, x1 = box(field_size, flanker_height, ecc)
            assert field[y0:y1, x0:x1].shape == f.shape
            field[y0:y1, x0:x1] = np.maximum(f, field[y0:y1, x0:x1])
    canvas = field.copy()

    def size_of(i: float) -> float:
        if num_scales == 1:
            return field_size
        if fovea == "exponential":
            return crop_size * ((field_size / float(crop_size)) ** (1 / float(num_scales - 1))) ** i
        step = int(field_size / (num_scales * float(crop_size)))
        return crop_size * (step * i + 1)

    crops = np.zeros((num_scales, crop_size, crop_size), np.uint8)
    for i in range(num_scales):
        img = field.copy()
        if i - chevron >= 0:  # black out the square of scale i - chevron (docs/original.md)
            lo, hi, _, _ = box(field_size, size_of(i - chevron))
            img[lo:hi, lo:hi] = 0
        lo, hi, _, _ = box(field_size, size_of(i))
        crops[i] = imresize(np.ascontiguousarray(img[lo:hi, lo:hi]), crop_size, crop_size)
    return canvas, crops


def areafactor(crops: np.ndarray, *, field_size: int, crop_size: int, num_scales: int, fovea: str) -> np.ndarray:
    """The original's divide_by_area_factor (float32), before the -0.5 shift."""
    ms = crops.astype(np.float32)
    step = 1.0 if num_scales == 1 else (field_size / float(crop_size)) ** (1 / float(num_scales - 1))
    n = ms.shape[0]
    for i in range(n):
        crop = ms[i]
        if np.max(crop) == 0:
            continue
        factor = step ** (2 * (n - i - 1)) if fovea == "exponential" else (n - i) ** 2
        ms[i] = (crop / float(np.max(crop)) / float(factor)).astype(np.float32)
    return ms


def valid(*, field_size: int, digit_height: int, flanker_height: int, target_ecc: float,
          flanker_type: int = 0, flanker_ecc: float | None = None) -> bool:
    """Would the original render this configuration without an error?"""
    def fits(size: int, ecc: float) -> bool:
        _, _, x0, x1 = box(field_size, size, ecc)
        return x0 >= 0 and x1 <= field_size and x1 - x0 == size

    if not fits(digit_height, target_ecc):
        return False
    if flanker_type == 0:
        return True
    if not abs(target_ecc - flanker_ecc) >= (digit_height + flanker_height) / 2.0:
        return False
    eccs = [flanker_ecc] if flanker_type == 1 else [flanker_ecc, 2 * target_ecc - flanker_ecc]
    return all(fits(flanker_height, e) for e in eccs) and not math.isnan(flanker_ecc)
