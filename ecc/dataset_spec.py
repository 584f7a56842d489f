"""What a stimulus dataset is, without torch: DatasetSpec (image source, split, stimulus geometry,
placement, seed) and its content key (`dataset_key`: the canonical spec, the source's *content*
fingerprint, the generator version), so plans and `--status` name datasets without loading the
renderer. Building and loading them: ecc.datasets.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from core.cli import arg, check_choices
from core.identity import array_digest, digest, to_jsonable

from . import sources
from .conditions import placement_arg
from .geometry import StimulusConfig, check_positions
from .sources import PARITIES, SPLITS

# Bump when a change alters the pixels produced for the same inputs (ecc.stimuli.render,
# ecc.resample): part of every dataset key.
GENERATOR_VERSION = 1
PLACES = ("None", "random")


class DatasetError(RuntimeError):
    """A dataset cannot be built or loaded."""


@dataclass(frozen=True)
class DatasetSpec:
    """What one stimulus dataset holds."""

    split: str = arg("train", "MNIST split: train (55,000 images), validation (first 5,000 of train) or test", choices=SPLITS)
    stimulus: StimulusConfig = field(default_factory=StimulusConfig)
    parity: str = arg("even", "targets: even digits (5 classes), odd, or none (all 10)", choices=PARITIES)
    flanker_dset: str = placement_arg("flanker_dset")
    random_shifts: bool = arg(False, "target eccentricity uniform over the field (training data)")
    target_ecc: float = placement_arg("target_ecc", "target eccentricity in pixels (without random_shifts)")
    flanker_type: int = placement_arg("flanker_type")
    flanker_ecc: float = placement_arg("flanker_ecc", "flanker eccentricity (with random_shifts: the spacing is "
                                       "flanker_ecc - target_ecc)", default=0.0)
    place: str = arg("None", "background: None (black) or random (a MIT Places photo per image)", choices=PLACES)
    seed: int = arg(0, "seed of the random positions and backgrounds")
    limit: int = arg(0, "keep at most this many images (0 = the whole split)")
    validation_size: int = arg(5000, "the first this many MNIST training images form the validation split")

    def __post_init__(self) -> None:
        check_choices(self)  # split, parity, flanker_type, flanker_dset, place
        for name in ("limit", "validation_size", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        check_positions(self.geometry, self.random_shifts, self.target_ecc, self.flanker_type, self.flanker_ecc)

    @property
    def geometry(self) -> StimulusConfig:
        """The stimulus as drawn: the model's geometry with this flanker set's own flanker height
        (StimulusConfig.with_flankers); the images' shape is the model's either way."""
        return self.stimulus.with_flankers(self.flanker_dset) if self.flanker_type else self.stimulus

    def canonical(self) -> DatasetSpec:
        """Equal specs for equal data: unused placement fields are zeroed."""
        spec = self
        if not spec.flanker_type:
            spec = replace(spec, flanker_ecc=0.0, flanker_dset="MNIST")
        if spec.random_shifts and not spec.flanker_type:
            spec = replace(spec, target_ecc=0.0)
        if not spec.random_shifts and spec.place == "None":
            spec = replace(spec, seed=0)  # nothing random left
        return spec



# ------------------------------------------------------------------------------- keys
def dataset_key(spec: DatasetSpec, source: sources.SourceConfig | None = None) -> str:
    """Content key: the canonical spec, the source data's fingerprint, the generator version."""
    source = source or sources.SourceConfig()
    payload = {"spec": to_jsonable(spec.canonical()), "mnist": sources.fingerprint(source),
               "version": GENERATOR_VERSION}
    if spec.flanker_type and spec.flanker_dset != "MNIST":
        flankers = sources.flanker_images(spec.flanker_dset, spec.split, source, spec.validation_size)
        payload["flankers"] = array_digest(flankers, "md5")
    if spec.geometry != spec.stimulus:  # flankers drawn at their set's own height (notMNIST, Omniglot)
        payload["flanker_height"] = spec.geometry.flanker_height
    if spec.place != "None":
        payload["places"] = str(source.places_dir.resolve())  # photos are not hashed: too many
    return f"{spec.split}-{digest(payload, 16)}"
