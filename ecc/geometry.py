"""Stimulus geometry without torch: StimulusConfig (`with_flankers`: the height a flanker set is
drawn at), the placement rules (one overlap rule: `check_spacing`) and the original's random shifts.
Rendering (`ecc.stimuli.render`) is the torch side; configs, plans and `--status` need only this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from core.cli import arg, check_choice, check_choices

from .sources.config import flanker_set

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
