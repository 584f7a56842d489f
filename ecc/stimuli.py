"""Multiscale crowding stimuli: a target digit (and flankers) in a wide field, seen as centred crops.

StimulusConfig (the geometry; `with_flankers`: the height a flanker set is drawn at), the
placement rules (one overlap rule: `check_spacing`), the original's random shifts, and `render`:
the crops of the original algorithm (docs/original.md), bit-exact, computed
without the canvas (resample.py), batched in torch on the CPU or a GPU. `normalize` turns stored
uint8 crops into the model input (contrast normalisation, then -0.5), as the original did at load
time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from core.cli import arg, check_choice, check_choices

from .resample import Placed, compose_canvas, resize_crops, square
from .sources.config import flanker_set

# Bump when a change alters the pixels produced for the same inputs (part of every dataset key).
GENERATOR_VERSION = 1

FOVEAS = ("exponential", "linear")
CONTRAST_NORMS = ("None", "areafactor")
FLANKER_TYPES = (0, 1, 2)


class InvalidPlacement(ValueError):
    """A target/flanker configuration that the original could not render (overlap, out of field)."""


@dataclass(frozen=True)
class StimulusConfig:
    """Geometry of one multiscale stimulus (the original's defaults)."""

    field_size: int = arg(1920, "side of the square visual field, in pixels")
    digit_height: int = arg(120, "height of the target digit in the field, in pixels")
    flanker_height: int = arg(120, "height of an MNIST or letters flanker in the field; notMNIST and Omniglot "
                              "flankers are drawn at 85/120 of it (the original's 85 px next to 120 px digits)")
    crop_size: int = arg(60, "side of every crop after resizing: the model's input size")
    num_scales: int = arg(11, "number of centred crops (scales)")
    fovea: str = arg("exponential", "how crop sizes grow with the scale index", choices=FOVEAS)
    chevron: float = arg(math.inf, "at most this many scales see any eccentricity (inf = off)")

    def __post_init__(self) -> None:
        for name in ("field_size", "digit_height", "flanker_height", "crop_size", "num_scales"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        check_choices(self)  # fovea
        for name in ("digit_height", "flanker_height", "crop_size"):
            if getattr(self, name) > self.field_size:
                raise ValueError(f"{name}={getattr(self, name)} exceeds field_size={self.field_size}")
        if not (self.chevron >= 1):
            raise ValueError(f"chevron must be >= 1 (or inf to disable), got {self.chevron!r}")

    def with_flankers(self, flanker_dset: str) -> StimulusConfig:
        """This geometry with `flanker_dset`'s flankers: flanker_height becomes the height that set
        is drawn at (ecc.sources.FlankerSet.drawn_height: the same for MNIST and letters, 85/120 of
        it for notMNIST and Omniglot, whose ink fills their frame). Every placement check and every
        rendering of flankers from a named set goes through here; call it on the model's geometry."""
        height = flanker_set(flanker_dset).drawn_height(self.flanker_height)
        return self if height == self.flanker_height else replace(self, flanker_height=height)

    # ------------------------------------------------------------------ geometry (derived)
    @property
    def ratio(self) -> float:
        """Exponential fovea: size ratio r between consecutive crops (sqrt 2 in the demo)."""
        if self.num_scales == 1:
            return 1.0
        return (self.field_size / float(self.crop_size)) ** (1 / float(self.num_scales - 1))

    @property
    def linear_step(self) -> int:
        """Linear fovea: crop i has side crop_size * (linear_step * i + 1)."""
        return int(self.field_size / (self.num_scales * float(self.crop_size)))

    def scale_size(self, i: float) -> float:
        """Side of crop i before truncation (i may be fractional for the chevron)."""
        if self.num_scales == 1:
            return float(self.field_size)
        if self.fovea == "exponential":
            return self.crop_size * self.ratio**i
        return self.crop_size * (self.linear_step * i + 1)

    @property
    def crop_bounds(self) -> tuple[tuple[int, int], ...]:
        """[lo, hi) of each centred crop, the same on both axes, int-truncated as the original."""
        return tuple(centred_bounds(self.field_size, self.scale_size(i)) for i in range(self.num_scales))

    @property
    def crop_sides(self) -> tuple[int, ...]:
        return tuple(hi - lo for lo, hi in self.crop_bounds)

    def blackout_bounds(self, i: int) -> tuple[int, int] | None:
        """Chevron: the centred square blacked out before taking crop i (None when no blackout).

        Per docs/original.md this is crop (i - chevron)'s square. The original code used
        crop_size * (i - chevron + 1) for the linear fovea, which equals it only when
        linear_step == 1; we follow the documented definition."""
        if i - self.chevron < 0:
            return None
        return centred_bounds(self.field_size, self.scale_size(i - self.chevron))

    def area_factor(self, i: int) -> float:
        """`areafactor` contrast normalisation divides crop i by its max and by this factor."""
        n = self.num_scales
        if self.fovea == "exponential":
            return float(self.ratio ** (2 * (n - 1 - i)))
        return float((n - i) ** 2)  # the original's choice for the linear fovea

    @property
    def max_target_ecc(self) -> float:
        """Largest |eccentricity| of a target fully inside the field (random shifts stay below it)."""
        return (self.field_size - self.digit_height) / 2.0

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one stimulus: (num_scales, crop_size, crop_size)."""
        return (self.num_scales, self.crop_size, self.crop_size)


def centred_bounds(field_size: int, size: float, offset: float = 0.0) -> tuple[int, int]:
    """[lo, hi) of a `size` box centred at field/2 + offset, truncated with int() as the original."""
    half = field_size / 2.0
    return int(half - size / 2.0 + offset), int(half + size / 2.0 + offset)


# ---------------------------------------------------------------------------- placement
def object_eccs(target_ecc: float, flanker_type: int, flanker_ecc: float | None) -> list[float]:
    """Centres of the flankers: none, one at flanker_ecc, or also its mirror about the target."""
    if flanker_type == 0:
        return []
    if flanker_type == 1:
        return [flanker_ecc]  # type: ignore[list-item]
    return [flanker_ecc, 2 * target_ecc - flanker_ecc]  # type: ignore[operator]


def check_placement(cfg: StimulusConfig, target_ecc: float, flanker_type: int = 0,
                    flanker_ecc: float | None = None) -> None:
    """Raise InvalidPlacement when the original could not render this configuration."""
    check_choice("flanker_type", flanker_type, FLANKER_TYPES, InvalidPlacement)
    _check_box(cfg, "target", target_ecc, cfg.digit_height)
    if flanker_type == 0:
        return
    if flanker_ecc is None or not math.isfinite(flanker_ecc):
        raise InvalidPlacement(f"flanker_type {flanker_type} needs a finite flanker_ecc, got {flanker_ecc!r}")
    check_spacing(cfg, flanker_ecc - target_ecc, f"flanker at eccentricity {flanker_ecc:g}", f" at {target_ecc:g}")
    for ecc in object_eccs(target_ecc, flanker_type, flanker_ecc):
        _check_box(cfg, "flanker", ecc, cfg.flanker_height)


def check_spacing(cfg: StimulusConfig, spacing: float, what: str = "a flanker", where: str = "") -> None:
    """The one overlap rule: a flanker's centre must be at least (digit_height + flanker_height)/2 from
    the target's (the boxes may touch, never overlap)."""
    need = (cfg.digit_height + cfg.flanker_height) / 2.0
    # A rounding error's tolerance: random shifts place the flanker at target + spacing in floating
    # point, which can land 3e-14 px short of an exact minimum spacing (-48 gave 47.99999999999997).
    if not abs(spacing) >= need - 1e-9:
        raise InvalidPlacement(
            f"{what} overlaps the target{where}: spacing {spacing:g} (flanker_ecc - target_ecc), need |spacing| >= "
            f"(digit_height {cfg.digit_height} + flanker_height {cfg.flanker_height})/2 = {need:g}")


def check_shift_spacing(cfg: StimulusConfig, flanker_type: int, spacing: float) -> None:
    """Random shifts (training positions): refuse flankers at `spacing` from the target that overlap it
    or never fit in the field wherever the target is."""
    check_spacing(cfg, spacing)
    dh, fh, half = cfg.digit_height / 2.0, cfg.flanker_height / 2.0, cfg.field_size / 2.0
    if flanker_type == 1:
        lo, hi = min(-dh, spacing - fh), max(dh, spacing + fh)
    else:
        lo, hi = -abs(spacing) - fh, abs(spacing) + fh
    # Target positions t where the whole group [t + lo, t + hi] lies strictly inside the field.
    t_lo, t_hi = max(-half - lo, -cfg.max_target_ecc), min(half - hi, cfg.max_target_ecc)
    if not t_lo < t_hi:
        raise InvalidPlacement(
            f"flankers at spacing {spacing:g} never fit: target and flanker(s) span {hi - lo:g} px, "
            f"the field is {cfg.field_size} px")


def check_positions(cfg: StimulusConfig, random_shifts: bool, target_ecc: float, flanker_type: int,
                    flanker_ecc: float) -> None:
    """The placement rule of a training set: with random shifts, flankers at the spacing
    flanker_ecc - target_ecc that fit somewhere (check_shift_spacing); without, this one
    configuration (check_placement). flanker_ecc is ignored without flankers."""
    if random_shifts:
        if flanker_type:
            check_shift_spacing(cfg, flanker_type, flanker_ecc - target_ecc)
    else:
        check_placement(cfg, target_ecc, flanker_type, flanker_ecc if flanker_type else None)


def _check_box(cfg: StimulusConfig, what: str, ecc: float, size: int) -> None:
    if not math.isfinite(ecc):
        raise InvalidPlacement(f"{what} eccentricity must be finite, got {ecc!r}")
    lo, hi = centred_bounds(cfg.field_size, size, ecc)
    if lo < 0 or hi > cfg.field_size or hi - lo != size:
        limit = (cfg.field_size - size) / 2.0
        raise InvalidPlacement(
            f"{what} at eccentricity {ecc:g} leaves the {cfg.field_size} px field: its {size} px box spans "
            f"[{lo}, {hi}); valid {what} eccentricities are {-limit:g}..{limit:g}")


def sample_random_shifts(cfg: StimulusConfig, n: int, rng: np.random.Generator, flanker_type: int = 0,
                         spacing: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Training positions (the original's `random_shifts`): the target uniform over the field;
    with flankers at a fixed `spacing` (flanker - target), positions redrawn until all fit."""
    width = cfg.field_size - cfg.digit_height
    half = cfg.field_size / 2.0
    target = rng.random(n) * width - width / 2.0
    if flanker_type == 0:
        return target, np.full(n, np.nan)
    check_shift_spacing(cfg, flanker_type, spacing)
    fh = cfg.flanker_height / 2.0
    dh = cfg.digit_height / 2.0
    for _attempt in range(10_000):
        flanker = target + spacing
        if flanker_type == 1:
            left = np.minimum(target - dh, flanker - fh)
            right = np.maximum(target + dh, flanker + fh)
        else:
            mirror = 2 * target - flanker
            left = np.minimum(mirror - fh, flanker - fh)
            right = np.maximum(mirror + fh, flanker + fh)
        bad = ~((right < half) & (left > -half))
        if not bad.any():
            return target, flanker
        target[bad] = rng.random(int(bad.sum())) * width - width / 2.0
    raise InvalidPlacement(f"no position in a {cfg.field_size} px field fits flankers at spacing {spacing:g}")


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
