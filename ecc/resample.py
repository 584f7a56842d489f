"""PIL-exact bilinear resampling in torch (Pillow's fixed-point coefficients) and every crop of a field without building it.

The original algorithm (docs/original.md) pastes squared digits into a black
`field_size`^2 canvas and resizes `num_scales` centred crops of it to `crop_size`^2 with PIL's
bilinear filter. This module computes exactly the same pixels without building the canvas:

* the canvas is black outside the objects, so each crop's resize only needs the objects' pixels;
* PIL's resize is a separable linear map with fixed-point (22-bit) coefficients, applied
  horizontally first, rounded to uint8, then vertically. We use the same integer coefficients
  and the same two roundings, so the result is bit-identical to PIL when the arithmetic is
  float64 (the default; every intermediate is an integer below 2^53), and within 1 gray level
  in float32 (a faster option).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # stimuli.py imports this module; the config is only read here
    from .geometry import StimulusConfig

PRECISION_BITS = 22  # Pillow's fixed-point precision for 8-bit images (Resample.c)


@functools.lru_cache(maxsize=256)
def pil_bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) matrix of Pillow's 8-bit BILINEAR coefficients, in fixed point.

    Reproduces Resample.c: a triangle filter whose support grows with the downscale factor
    (antialiasing), normalised per output pixel, then rounded to PRECISION_BITS bits."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    out = np.zeros((out_size, in_size))
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        x = np.arange(xmin, xmax)
        w = np.maximum(0.0, 1.0 - np.abs((x - center + 0.5) / filterscale))
        if w.sum() != 0.0:
            w = w / w.sum()
        out[xx, xmin:xmax] = np.floor(0.5 + w * (1 << PRECISION_BITS))
    out.setflags(write=False)
    return out


def _round_fixed(acc: torch.Tensor) -> torch.Tensor:
    """Pillow's clip8 on an accumulator already scaled by 2^-22: floor(acc + 1/2), in place.

    No clamp is needed: the weights are non-negative and sum to 1 within 2^-22 per tap, so a
    weighted sum of values in 0..255 rounds into 0..255."""
    return acc.add_(0.5).floor_()


class _Matrices:
    """Per (device, dtype) cache of resampling matrices as tensors, scaled by 2^-22 (exact)."""

    def __init__(self) -> None:
        self._cache: dict[tuple, torch.Tensor] = {}

    def get(self, in_size: int, out_size: int, device: torch.device, dtype: torch.dtype,
            pad: int = 0) -> torch.Tensor:
        """(out, in + 2 pad): zero columns on both sides let a window start outside the input."""
        key = (in_size, out_size, str(device), dtype, pad)
        t = self._cache.get(key)
        if t is None:
            m = np.pad(pil_bilinear_matrix(in_size, out_size), ((0, 0), (pad, pad))) / float(1 << PRECISION_BITS)
            t = self._cache[key] = torch.tensor(m, dtype=dtype, device=device)
        return t


_MATRICES = _Matrices()


@functools.lru_cache(maxsize=1024)
def _support(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each input pixel, the first and last output pixel whose weight on it is non-zero."""
    nz = pil_bilinear_matrix(in_size, out_size) > 0  # (out, in)
    first = np.where(nz.any(0), nz.argmax(0), out_size)
    last = np.where(nz.any(0), out_size - 1 - nz[::-1].argmax(0), -1)
    return first, last


@functools.lru_cache(maxsize=1024)
def _window(in_size: int, out_size: int, width: int) -> int:
    """Most output pixels that an object `width` px wide, anywhere in the input, can touch."""
    first, last = _support(in_size, out_size)
    u = np.arange(-width + 1, in_size)
    lo, hi = np.maximum(u, 0), np.minimum(u + width, in_size) - 1
    return int(max(1, (last[hi] - first[lo] + 1).max()))


def resize_exact(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """PIL BILINEAR resize of a batch (N, H, W) of integer-valued floats: horizontal, round, vertical, round."""
    _, h, w = x.shape
    if w != out_w:
        x = _round_fixed(x @ _MATRICES.get(w, out_w, x.device, x.dtype).T)
    if h != out_h:
        x = _round_fixed(_MATRICES.get(h, out_h, x.device, x.dtype) @ x)
    return x


def square(images: torch.Tensor, height: int) -> torch.Tensor:
    """The original's make_square: resize so the longer side is `height` (aspect kept, int sizes),
    centred in a black height x height square. (N, h, w) -> (N, height, height), same dtype."""
    n, h, w = images.shape
    out = images.new_zeros((n, height, height))
    if h > w:
        new_w = int(w / float(h) * height)
        offset = int((height - new_w) / 2.0)
        out[:, :, offset:offset + new_w] = resize_exact(images, height, new_w)
    else:
        new_h = int(h / float(w) * height)
        offset = int((height - new_h) / 2.0)
        out[:, offset:offset + new_h, :] = resize_exact(images, new_h, height)
    return out


# ---------------------------------------------------------------------- crops of a field
@dataclass(frozen=True)
class Placed:
    """Squared target or flanker images (one per image of a batch) at their boxes in the field."""

    pixels: torch.Tensor  # (N, h, h) integer-valued floats
    x0: torch.Tensor      # (N,) int64: left column of the box in the field
    y0: int               # top row of the box (objects are centred vertically)
    uniform: bool = False  # every image has it at the same place (a test condition)


def resize_crops(cfg: StimulusConfig, objects: list[Placed]) -> torch.Tensor:
    """Resize every centred crop of the (implicit) canvas holding `objects`: uint8 (N, S, C, C).

    Objects never overlap (check_placement), so a canvas pixel is the one object covering it. Per
    scale and object, only the output columns that the object's weights reach are computed
    (a window of w columns starting at j0), and only the output rows that the objects' rows reach.
    Horizontal results are kept transposed, (N, columns, rows), so the vertical pass is one matrix
    product for the whole batch. An object at one place in every image (a test condition) shares
    its weights across the batch: one large matrix product instead of a batched one."""
    n, c = objects[0].pixels.shape[0], cfg.crop_size
    dev, dtype = objects[0].pixels.device, objects[0].pixels.dtype
    band_lo = min(o.y0 for o in objects)
    band_hi = max(o.y0 + o.pixels.shape[-2] for o in objects)
    out = torch.zeros((n, cfg.num_scales, c, c), dtype=torch.uint8, device=dev)
    for i, (lo, hi) in enumerate(cfg.crop_bounds):
        m = hi - lo
        r_lo, r_hi = max(lo, band_lo), min(hi, band_hi)  # crop rows that can be non-black
        if r_lo >= r_hi:
            continue
        first, last = _support(m, c)
        a, b = int(first[r_lo - lo]), int(last[r_hi - lo - 1]) + 1  # output rows the band reaches
        kv = _MATRICES.get(m, c, dev, dtype)[a:b, r_lo - lo:r_hi - lo]  # (b - a, rows)
        parts = [p for o in objects if (p := _horizontal(cfg, o, i, lo, hi, r_lo)) is not None]
        if not parts:
            continue
        if len(parts) == 1 and parts[0][3].shape[2] == r_hi - r_lo:
            seen, j0, _, tmp = parts[0]  # one object: its window is the whole horizontal result
        else:  # several: sum them over the full width before rounding, as on the canvas
            seen, j0 = None, 0
            tmp = torch.zeros((n, c, r_hi - r_lo), dtype=dtype, device=dev)
            for images, start, row, part in parts:
                k, w, rows = part.shape
                if images is None and isinstance(start, int):
                    tmp[:, start:start + w, row:row + rows] += part
                    continue
                start = torch.as_tensor(start, device=dev).expand(k)
                idx = (start[:, None] + torch.arange(w, device=dev))[:, :, None].expand(-1, -1, rows)
                full = torch.zeros((k, c, rows), dtype=dtype, device=dev).scatter_add_(1, idx, part)
                if images is None:
                    tmp[:, :, row:row + rows] += full
                else:
                    tmp[:, :, row:row + rows].index_add_(0, images, full)
        tmp = _round_fixed(tmp.contiguous())
        k, cols, _ = tmp.shape
        vert = _round_fixed((tmp.reshape(k * cols, -1) @ kv.T).view(k, cols, b - a)).to(torch.uint8)
        if seen is None and isinstance(j0, int):
            out[:, i, a:b, j0:j0 + cols] = vert.transpose(1, 2)
        else:
            images = torch.arange(n, device=dev) if seen is None else seen
            jj = torch.as_tensor(j0, device=dev).expand(k)[:, None] + torch.arange(cols, device=dev)
            out[:, i].transpose(1, 2)[images[:, None], jj, a:b] = vert
    return out


def _horizontal(cfg: StimulusConfig, o: Placed, i: int, lo: int, hi: int, r_lo: int):
    """Horizontal pass of crop i over one object: (images or None for all, first output column
    (int when shared), first row in the band, (k, w, rows) result), or None when it is not in the crop."""
    c, m, h = cfg.crop_size, hi - lo, o.pixels.shape[-1]
    dev, dtype = o.pixels.device, o.pixels.dtype
    y_lo, y_hi = max(o.y0, lo), min(o.y0 + h, hi)
    if y_lo >= y_hi:
        return None
    pix = o.pixels[:, y_lo - o.y0:y_hi - o.y0, :]  # (N, rows, h), a view
    black = cfg.blackout_bounds(i)
    rows = torch.arange(y_lo, y_hi, device=dev)
    black_rows = None if black is None else (rows >= black[0]) & (rows < black[1])
    first, _ = _support(m, c)
    w = min(c, _window(m, c, h))
    # Weight blocks (w outputs x h object columns) are read from a matrix padded by h zero columns,
    # so objects partly outside the crop get zero weights there.
    kpad = _MATRICES.get(m, c, dev, dtype, pad=h)  # (C, m + 2h)
    if o.uniform:
        u = int(o.x0[0]) - lo  # crop column of the object's first column, the same in every image
        if not (u < m and u + h > 0):
            return None
        if black_rows is not None:
            cols = torch.arange(u + lo, u + lo + h, device=dev)
            pix = pix.masked_fill(black_rows[:, None] & ((cols >= black[0]) & (cols < black[1]))[None, :], 0)
        j0 = int(min(first[min(max(u, 0), m - 1)], c - w))
        start = min(max(u + h, 0), m + h)
        weights = kpad[j0:j0 + w, start:start + h]  # (w, h), shared by the batch
        return None, j0, y_lo - r_lo, torch.matmul(pix, weights.T).transpose(1, 2)  # (N, w, rows)
    u = o.x0 - lo  # (N,)
    seen = torch.nonzero((u < m) & (u + h > 0)).squeeze(1)  # images where it is in the crop
    if seen.numel() == 0:
        return None
    whole = seen.numel() == len(u)
    u, pix = (u, pix) if whole else (u[seen], pix[seen])
    if black_rows is not None:
        cols = (u + lo)[:, None] + torch.arange(h, device=dev)
        pix = pix.masked_fill(black_rows[None, :, None] & ((cols >= black[0]) & (cols < black[1]))[:, None, :], 0)
    j0 = torch.as_tensor(first, device=dev)[u.clamp(0, m - 1)].clamp(max=c - w)  # (k,)
    weights = kpad.unfold(0, w, 1).unfold(1, h, 1)[j0, (u + h).clamp(0, m + h)]  # (k, w, h)
    return (None if whole else seen), j0, y_lo - r_lo, torch.bmm(weights, pix.transpose(1, 2))


def compose_canvas(cfg: StimulusConfig, objects: list[Placed], index: int = 0,
                   background: np.ndarray | None = None) -> np.ndarray:
    """The full field of image `index` as the original built it (uint8 field_size^2): the
    background resized to the field (or black), the target pasted over it, flankers by maximum."""
    f = cfg.field_size
    if background is not None:
        bg = torch.as_tensor(_grayscale(background), dtype=torch.float64)[None]
        canvas = resize_exact(bg, f, f)[0].numpy().astype(np.uint8)
    else:
        canvas = np.zeros((f, f), np.uint8)
    for k, o in enumerate(objects):
        pix = o.pixels[index].cpu().numpy().astype(np.uint8)
        h = pix.shape[0]
        x0 = int(o.x0[index])
        region = canvas[o.y0:o.y0 + h, x0:x0 + h]
        canvas[o.y0:o.y0 + h, x0:x0 + h] = pix if k == 0 else np.maximum(region, pix)
    return canvas


def _grayscale(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 3:  # RGB(A) -> L with PIL's weights
        from PIL import Image

        arr = np.asarray(Image.fromarray(arr[..., :3].astype(np.uint8)).convert("L"))
    if arr.dtype != np.uint8 or arr.ndim != 2:
        raise ValueError(f"a background must be a uint8 grayscale (H, W) or RGB image, got {arr.dtype} {arr.shape}")
    return arr
