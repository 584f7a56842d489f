"""What a sweep runs: models x learning rates, the selection rule, the evaluation grid, resources.

A sweep is plain Python (see sweeps/demo.py): a frozen SweepSpec. Everything the stages need is
derived from it here, in one place: the training runs, the datasets they need, and the valid
evaluation conditions (invalid and duplicate grid points dropped and counted).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from cluster.resources import Resources
from ecc import sources
from ecc.datasets import DatasetSpec
from ecc.evaluate import Condition, eval_hash
from ecc.identity import config_hash, to_jsonable
from ecc.sources import SourceConfig
from ecc.stimuli import InvalidPlacement, StimulusConfig
from ecc.train import TrainConfig
from results.figspec import FigureSpec

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*\Z")  # \Z: `$` would also accept a final newline
SELECTION_RULES = ("val/acc",)


class SpecError(ValueError):
    """A sweep that cannot run; raised before anything is submitted."""


@dataclass(frozen=True)
class EvalGrid:
    """Test conditions: every (flanker type, target eccentricity, flanker eccentricity, flanker set)."""

    target_eccs: tuple[float, ...]
    flanker_eccs: tuple[float, ...]
    flanker_types: tuple[int, ...] = (0, 1, 2)
    flanker_dsets: tuple[str, ...] = ("MNIST",)
    test_images: int = 0  # test targets per condition (0 = all ~4,900 even test digits)

    def expand(self, stimulus: StimulusConfig) -> tuple[list[Condition], dict[str, int]]:
        """Valid, distinct conditions for a geometry, and how many grid points were dropped why."""
        seen: dict[Condition, None] = {}
        dropped = {"invalid": 0, "duplicate": 0}
        for ft, te, fe, fd in itertools.product(self.flanker_types, self.target_eccs, self.flanker_eccs,
                                                self.flanker_dsets):
            cond = Condition(float(te), None if ft == 0 else float(fe), int(ft), fd).canonical()
            try:
                cond.check(stimulus)
            except InvalidPlacement:
                dropped["invalid"] += 1
                continue
            if cond in seen:
                dropped["duplicate"] += 1
            else:
                seen[cond] = None
        return list(seen), dropped


@dataclass(frozen=True)
class StageResources:
    datasets: Resources = field(default_factory=lambda: Resources(cpus=2, mem_gb=8, time_min=60))
    train: Resources = field(default_factory=lambda: Resources(cpus=8, gpus=1, mem_gb=16, time_min=360))
    eval: Resources = field(default_factory=lambda: Resources(cpus=4, gpus=1, mem_gb=8, time_min=60))

    def stage(self, name: str) -> Resources:
        return getattr(self, name)


@dataclass(frozen=True)
class TrainRun:
    """One training job: a model of the sweep at one learning rate."""

    model: str
    config: TrainConfig

    @property
    def hash(self) -> str:
        return config_hash(self.config)

    @property
    def dir(self) -> str:
        return f"train/{self.hash}"


@dataclass(frozen=True)
class EvalRun:
    """One evaluation job: a selected model on one condition."""

    model: str
    model_hash: str
    learning_rate: float
    condition: Condition
    test_images: int

    @property
    def hash(self) -> str:
        return eval_hash(self.model_hash, self.condition, self.test_images)

    @property
    def dir(self) -> str:
        return f"eval/{self.hash}"


@dataclass(frozen=True)
class SweepSpec:
    """One experiment: models x learning rates, selection, evaluation grid, per-stage resources."""

    name: str
    models: tuple[tuple[str, TrainConfig], ...]  # (display name, config); the learning rate is the sweep's
    learning_rates: tuple[float, ...]
    grid: EvalGrid
    selection: str = "val/acc"  # highest final validation accuracy, ties by lowest validation loss
    figures: FigureSpec = field(default_factory=FigureSpec)
    resources: StageResources = field(default_factory=StageResources)
    source: SourceConfig = field(default_factory=SourceConfig)
    conditions_per_job: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise SpecError(f"sweep name {self.name!r} must be letters, digits and ._=+- (it names a folder)")
        if not self.models:
            raise SpecError(f"sweep {self.name!r} has no models")
        names = [n for n, _ in self.models]
        for n in names:
            if not NAME_RE.match(n):
                raise SpecError(f"model name {n!r} must be letters, digits and ._=+- "
                                "(no '/' or '..': it must not escape the experiment folder)")
        if len(set(names)) != len(names):
            raise SpecError(f"model names repeat: {names}")
        if not self.learning_rates or any(not (lr > 0) for lr in self.learning_rates):
            raise SpecError(f"learning rates must be positive numbers, got {self.learning_rates}")
        if len(set(self.learning_rates)) != len(self.learning_rates):
            raise SpecError(f"learning rates repeat: {self.learning_rates}")
        if self.selection not in SELECTION_RULES:
            raise SpecError(f"selection {self.selection!r} is not one of {', '.join(SELECTION_RULES)}")
        if self.conditions_per_job < 1:
            raise SpecError(f"conditions_per_job must be >= 1, got {self.conditions_per_job}")
        if self.grid.test_images < 0:
            raise SpecError(f"test_images must be >= 0 (0 = all), got {self.grid.test_images}")
        for name, cfg in self.models:
            conditions, _ = self.grid.expand(cfg.stimulus)
            if not conditions:
                raise SpecError(f"the grid has no valid condition for model {name!r} (field {cfg.stimulus.field_size}"
                                f" px, digit {cfg.stimulus.digit_height} px): target eccentricities "
                                f"{list(self.grid.target_eccs)}, flanker eccentricities {list(self.grid.flanker_eccs)}")

    # ------------------------------------------------------------------ derived plans
    def train_runs(self) -> list[TrainRun]:
        return [TrainRun(name, replace(cfg, learning_rate=lr)) for name, cfg in self.models
                for lr in self.learning_rates]

    def datasets(self) -> list[DatasetSpec]:
        """The training and validation datasets of every run, each once."""
        out: dict[DatasetSpec, None] = {}
        for run in self.train_runs():
            out.setdefault(run.config.train_spec(), None)
            out.setdefault(run.config.validation_spec(), None)
        return list(out)

    def check_data(self) -> None:
        """Raise sources.MissingDataError when a flanker set or the backgrounds that the sweep
        needs must be fetched by hand and are not there (before anything is submitted)."""
        dsets = [*self.grid.flanker_dsets, *(cfg.flanker_dset for _, cfg in self.models if cfg.flanker_type)]
        sources.require(dsets, places=any(cfg.place != "None" for _, cfg in self.models), source=self.source)

    def model_config(self, name: str) -> TrainConfig:
        return dict(self.models)[name]

    def conditions(self, name: str) -> tuple[list[Condition], dict[str, int]]:
        return self.grid.expand(self.model_config(name).stimulus)

    def eval_runs(self, selected: Iterable[tuple[str, str, float]]) -> list[EvalRun]:
        """Eval jobs for the selected (model name, train hash, learning rate) triples."""
        return [EvalRun(name, h, lr, cond, self.grid.test_images)
                for name, h, lr in selected for cond in self.conditions(name)[0]]

    def to_json(self) -> dict:
        return to_jsonable(self)


def override_resources(res: Resources, **changes) -> Resources:
    """Resources with the command line's non-None overrides applied (validated again)."""
    kept = {k: v for k, v in changes.items() if v is not None}
    return dataclasses.replace(res, **kept) if kept else res
