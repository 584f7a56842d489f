"""A training run's configuration: TrainConfig (what it computes), RunOptions (how it runs), config.json.

TrainConfig nests the stimulus geometry (ecc.geometry.StimulusConfig) and the architecture
(ecc.model.ModelConfig), and checks what needs several of them. Its hash (core.identity) names
the run's folder; RunOptions never enters it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import CorruptFileError, read_json
from core.cli import arg, check_choices
from core.identity import config_hash, from_jsonable
from core.layout import CONFIG
from core.runs import write_config

from .conditions import placement_arg
from .dataset_spec import PLACES, DatasetSpec
from .geometry import CONTRAST_NORMS, StimulusConfig
from .model_config import ModelConfig

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """Train the eccentricity-dependent model on multiscale MNIST stimuli (the original's ecc_train.py)."""

    stimulus: StimulusConfig = field(default_factory=StimulusConfig)  # geometry of the stimuli
    model: ModelConfig = field(default_factory=ModelConfig)  # architecture of the model
    random_shifts: bool = arg(False, "train on targets at uniformly random eccentricities over the whole field "
                              "(overrides --target_ecc; flankers keep the spacing flanker_ecc - target_ecc)",
                              aliases=("random_shift",))  # the original's spelling (options are not abbreviated)
    target_ecc: float = placement_arg("target_ecc", "target eccentricity of the training images in pixels, "
                                      "without --random_shifts", aliases=("train_ecc",))
    flanker_type: int = placement_arg("flanker_type")
    flanker_ecc: float = placement_arg("flanker_ecc", "flanker eccentricity in pixels (ignored for --flanker_type 0)",
                                       default=0.0)
    flanker_dset: str = placement_arg("flanker_dset")
    contrast_norm: str = arg("None", "contrast normalisation of the crops: None (x/255) or areafactor "
                             "(each crop / its max / its area factor)", choices=CONTRAST_NORMS)
    place: str = arg("None", "backgrounds: None (black) or random (a MIT Places photo per image)", choices=PLACES)
    validation_size: int = arg(5000, "the first this many MNIST training images form the validation split")
    train_images: int = arg(0, "train on at most this many images (0 = the whole training split)")
    learning_rate: float = arg(0.1, "learning rate of Adagrad")
    num_epochs: int = arg(20, "passes over the training images")
    batch_size: int = arg(128, "images per training step")
    seed: int = arg(0, "seed of the initial weights and of the image order (replicates differ in it)")
    data_seed: int | None = arg(None, "seed of the random stimulus positions of the training and validation "
                                "images; None: the same as --seed (replicates of a sweep share the positions "
                                "of data_seed 0, so they share one training dataset)")

    def __post_init__(self) -> None:
        # The nested configs checked themselves; these are the checks that need several of them.
        if self.model.factory:  # a network of your own sees the crops through its view
            widest = self.stimulus.scale_size(self.stimulus.num_scales - 1)  # before int truncation
            if self.model.view == "field" and round(widest) != self.stimulus.field_size:
                raise ValueError(f"view field takes the widest crop as the whole field, but it is "
                                 f"{widest:g} px of a {self.stimulus.field_size} px field "
                                 f"(fovea {self.stimulus.fovea}); use --num_scales 1 or the exponential fovea")
        elif self.model.num_scales != self.stimulus.num_scales:
            raise ValueError(f"pm {self.model.pm} starts with {self.model.num_scales} scales but --num_scales is "
                             f"{self.stimulus.num_scales}; the first number of pm must equal --num_scales")
        else:
            self.model.layer_shapes(self.stimulus.crop_size)  # crops large enough for every layer
        check_choices(self)  # flanker_type, flanker_dset, contrast_norm, place
        for name in ("target_ecc", "flanker_ecc", "learning_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        for name, low in (("num_epochs", 1), ("batch_size", 1), ("validation_size", 1), ("train_images", 0),
                          ("seed", 0), ("data_seed", 0)):
            value = getattr(self, name)
            if name == "data_seed" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.data_seed == self.seed:
            # One run, one identity: data_seed equal to seed is the default (None), so runs written
            # before data_seed existed (positions seeded by `seed`) keep their hash.
            object.__setattr__(self, "data_seed", None)
        # The placement rule (check_positions, flankers at their set's height) and anything else
        # DatasetSpec refuses.
        self.dataset_spec("train")

    @property
    def stimulus_seed(self) -> int:
        """The seed of the training and validation positions (data_seed, else seed)."""
        return self.seed if self.data_seed is None else self.data_seed

    @property
    def hash(self) -> str:
        """The run's identity."""
        return config_hash(self)

    def dataset_spec(self, split: str) -> DatasetSpec:
        """The stimuli of one split, placed as in training."""
        return DatasetSpec(
            split=split, stimulus=self.stimulus, parity=self.model.parity, flanker_dset=self.flanker_dset,
            random_shifts=self.random_shifts, target_ecc=float(self.target_ecc), flanker_type=self.flanker_type,
            flanker_ecc=float(self.flanker_ecc), place=self.place, seed=self.stimulus_seed,
            limit=self.train_images if split == "train" else 0, validation_size=self.validation_size)

    def train_spec(self) -> DatasetSpec:
        return self.dataset_spec("train")

    def validation_spec(self) -> DatasetSpec:
        """The whole validation split, drawn like the training images."""
        return self.dataset_spec("validation")


@dataclass(frozen=True)
class RunOptions:
    """How a run executes; none of it changes what it computes (not part of the run identity)."""

    device: str = arg("auto", "where to compute: auto (a GPU when there is one), cpu or cuda", choices=DEVICES)
    precision: str = arg("fp32", "fp32 (full float32: TF32 off for cuDNN convolutions and matmuls), tf32 (TF32 "
                         "tensor cores on Ampere and later: faster, 10 mantissa bits, so the areafactor model's "
                         "central crops, spanning ~1/1024, keep only a few levels) or bf16 (bfloat16 autocast: "
                         "faster still, coarser); only fp32 is bitwise reproducible", choices=PRECISIONS)
    threads: int = arg(0, "CPU threads for torch (0 = torch's default)")
    checkpoint_every: int = arg(200, "steps between checkpoints (0 = only at the end of each epoch); a checkpoint "
                                "is also written at every epoch end and on SIGUSR2/SIGTERM")
    progress: bool = arg(True, "show progress: a bar on a terminal, else one line per --progress_interval")
    progress_interval: float = arg(60.0, "seconds between progress lines when not on a terminal")
    train_dir: str = arg("runs", "CLI: datasets go to TRAIN_DIR/data and the run to TRAIN_DIR/trained/MODEL_NAME")
    model_name: str = arg("", "CLI: name of the run folder under TRAIN_DIR/trained; empty: the config hash")

    def __post_init__(self) -> None:
        check_choices(self)  # device, precision
        for name in ("threads", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.progress_interval > 0:
            raise ValueError(f"progress_interval must be > 0 seconds, got {self.progress_interval!r}")
        if self.model_name and (os.sep in self.model_name or self.model_name in (".", "..")):
            raise ValueError(f"model_name {self.model_name!r} must be a plain folder name, without {os.sep!r}")


# -------------------------------------------------------------------------------- config.json
def read_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The TrainConfig of a run folder (from config.json)."""
    path = Path(run_dir) / CONFIG
    data = read_json(path, ("config",))
    if data is None:
        raise FileNotFoundError(f"{path} does not exist: {run_dir} is not a training run folder")
    return from_jsonable(TrainConfig, data["config"])


def provenance(cfg: TrainConfig) -> dict[str, str]:
    """What config.json records beside the config: a factory's source file and its sha256 (none for EccNet)."""
    from . import factory  # torch, and the user's module: only where a factory's source is recorded

    return factory.source(cfg.model.factory) if cfg.model.factory else {}


def check_provenance(run_dir: Path, cfg: TrainConfig, recorded: dict[str, str] | None = None) -> dict[str, str]:
    """The run's provenance, refused (ValueError naming the run and both digests) when its folder's
    config.json records another source of the same factory: one folder, one network."""
    now = provenance(cfg) if recorded is None else recorded
    try:
        have = read_json(Path(run_dir) / CONFIG) or {}
    except CorruptFileError:
        return now  # write_config says what is wrong with it
    old = have.get("factory_sha256")
    if old is not None and now and old != now["factory_sha256"]:
        raise ValueError(f"run {run_dir} was trained with factory {cfg.model.factory!r} whose source "
                         f"{have.get('factory_source')} had sha256 {old}; it is {now['factory_sha256']} now. "
                         "Restore the source, or give the changed network another name or factory_kwargs "
                         "(or remove the run folder) rather than mixing two networks in one folder")
    return now


def write_train_config(run_dir: Path, cfg: TrainConfig, recorded: dict[str, str] | None = None,
                       **extra: Any) -> None:
    """Write a training run's config.json (with its provenance), or check that the folder's is this run's."""
    write_config(run_dir, "train", cfg.hash, cfg, **check_provenance(run_dir, cfg, recorded), **extra)


def claim_folder(run_dir: Path, cfg: TrainConfig) -> None:
    """Write config.json, or check that the folder's config.json is this config's."""
    recorded = provenance(cfg)  # a factory that cannot be found is not a matter of the folder's name
    try:
        write_train_config(run_dir, cfg, recorded)
    except ValueError as e:
        raise ValueError(f"{e} (with the CLI: another --model_name)") from None
