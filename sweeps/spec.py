"""What a sweep runs: models x learning rates x seeds, the selection rule, the evaluation grid, the
claims it tests, resources.

A sweep is plain Python (see sweeps/demo.py): a frozen SweepSpec. Everything the stages need is
derived from it here, in one place: the training runs, the datasets they need, and the valid
evaluation conditions (invalid and duplicate grid points dropped and counted).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from cluster.resources import Resources
from core.identity import config_hash, to_jsonable
from core.layout import run_dir_name
from ecc import sources
from ecc.conditions import Condition, eval_hash
from ecc.config import TrainConfig
from ecc.dataset_spec import DatasetSpec
from ecc.geometry import FLANKER_TYPES, InvalidPlacement, StimulusConfig
from ecc.sources import FLANKER_DSETS, SourceConfig
from results.figspec import FigureSpec
from results.findings import Claim, Term, _matches, _term_rows, _x_values

__all__ = ["Claim", "EvalGrid", "EvalRun", "FigureSpec", "SpecError", "StageResources", "SweepSpec", "Term",
           "TrainRun", "choose"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*\Z")  # \Z: `$` would also accept a final newline

# Selection rules: which learning rate(s) of a model are evaluated. Every rule scores a learning rate
# on the MEAN over its seeds' final metrics (the runs that finished), and evaluates every seed of the
# chosen learning rate: the replicates are replicates of one configuration, so the interval across
# them measures seed-to-seed variation alone (a per-seed choice would mix in the selection's noise
# and could compare different learning rates as if they were one model).
SELECTION_RULES = ("val/acc", "train/loss", "all")
RULE_TEXT = {
    "val/acc": "highest val/acc, ties broken by lowest val/loss",
    "train/loss": "lowest final train/loss, ties to the smaller learning rate (the original's rule, which read "
                  "the last training loss from the log)",
    "all": "every learning rate is evaluated (no selection)",
}


STAGE_NAMES = ("datasets", "train", "eval")  # the stages with resources of their own


class SpecError(ValueError):
    """A sweep that cannot run; raised before anything is submitted."""


def as_tuple(name: str, values: Any) -> tuple:
    """Any sequence a sweep may be written with (tuple, list, range, numpy array) as a tuple of plain
    Python values (numpy scalars become int/float/str), so that specs compare, hash and go to JSON alike."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise SpecError(f"{name} must be a sequence (tuple, list, range, numpy array), got {values!r}")
    return tuple(v.item() if isinstance(v, np.generic) else v for v in values)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool, not a string, not inf or NaN)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_type(name: str, value: Any, cls: type) -> None:
    if not isinstance(value, cls):
        where = "" if cls.__module__ == "builtins" else f" ({cls.__module__})"
        raise SpecError(f"{name} must be a {cls.__name__}{where}, got {type(value).__name__} {_short(value)}")


def _short(value: Any, n: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n - 3] + "..."


@dataclass(frozen=True)
class EvalGrid:
    """Test conditions: every (flanker type, target eccentricity, flanker eccentricity, flanker set)."""

    target_eccs: tuple[float, ...]
    flanker_eccs: tuple[float, ...]
    flanker_types: tuple[int, ...] = (0, 1, 2)
    flanker_dsets: tuple[str, ...] = ("MNIST",)
    test_images: int = 0  # test targets per condition (0 = all ~4,900 even test digits)

    def __post_init__(self) -> None:
        for name in ("target_eccs", "flanker_eccs", "flanker_types", "flanker_dsets"):
            object.__setattr__(self, name, as_tuple(name, getattr(self, name)))
        if isinstance(self.test_images, np.generic):
            object.__setattr__(self, "test_images", self.test_images.item())
        for name in ("target_eccs", "flanker_eccs"):
            values = getattr(self, name)
            for v in values:
                if not is_number(v):
                    raise SpecError(f"{name} {v!r} in {list(values)} is not a finite number of pixels")
        for ft in self.flanker_types:
            if isinstance(ft, bool) or ft not in FLANKER_TYPES:
                raise SpecError(f"flanker_types {ft!r} is not one of {', '.join(map(str, FLANKER_TYPES))} "
                                "(no flanker, one, two)")
        for fd in self.flanker_dsets:
            if not isinstance(fd, str) or fd not in FLANKER_DSETS:
                raise SpecError(f"flanker_dsets {fd!r} is not one of {', '.join(FLANKER_DSETS)}")
        t = self.test_images
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise SpecError(f"test_images must be >= 0 and a whole number (0 = all ~4,900 test digits), got {t!r}")

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
    # True for a sweep that declares no resources: where jobs run on this machine (the local and
    # debug executors), each stage gets at most its cores, GPUs and memory (sweeps.preflight.fit_here).
    fit_local: bool = False

    def __post_init__(self) -> None:
        for name in STAGE_NAMES:
            _check_type(f"resources.{name}", getattr(self, name), Resources)

    def stage(self, name: str) -> Resources:
        return getattr(self, name)


@dataclass(frozen=True)
class TrainRun:
    """One training job: a model of the sweep at one learning rate and one seed."""

    model: str
    config: TrainConfig

    @property
    def hash(self) -> str:
        return config_hash(self.config)

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def dir(self) -> str:
        return run_dir_name("train", self.hash)


@dataclass(frozen=True)
class EvalRun:
    """One evaluation job: a selected model on one condition."""

    model: str
    model_hash: str
    learning_rate: float
    condition: Condition
    test_images: int
    seed: int = 0  # the trained run's seed (part of its model_hash already)

    @property
    def hash(self) -> str:
        return eval_hash(self.model_hash, self.condition, self.test_images)

    @property
    def dir(self) -> str:
        return run_dir_name("eval", self.hash)


@dataclass(frozen=True)
class SweepSpec:
    """One experiment: models x learning rates x seeds, selection, evaluation grid, claims, per-stage
    resources."""

    name: str
    models: tuple[tuple[str, TrainConfig], ...]  # (display name, config); the learning rate is the sweep's
    learning_rates: tuple[float, ...]
    grid: EvalGrid
    selection: str = "val/acc"  # one of SELECTION_RULES (see RULE_TEXT), on the mean over seeds
    seeds: tuple[int, ...] = (0,)  # replicates: seeds of the initial weights and the batch order
    data_seed: int | None = 0  # seed of the training positions, shared by the replicates; None: each its own
    figures: FigureSpec = field(default_factory=FigureSpec)
    claims: tuple[Claim, ...] = ()  # what the experiment tests (results.findings): findings.md
    resources: StageResources = field(default_factory=lambda: StageResources(fit_local=True))  # none declared
    source: SourceConfig = field(default_factory=SourceConfig)
    conditions_per_job: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(as_tuple("each of models", m) for m in as_tuple("models", self.models)))
        for name in ("learning_rates", "seeds", "claims"):
            object.__setattr__(self, name, as_tuple(name, getattr(self, name)))
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            raise SpecError(f"sweep name {self.name!r} must be letters, digits and ._=+- (it names a folder)")
        if not self.models:
            raise SpecError(f"sweep {self.name!r} has no models")
        for m in self.models:
            if len(m) != 2 or not isinstance(m[0], str):
                raise SpecError(f"models must be (name, TrainConfig) pairs, got {_short(m)}")
            if not NAME_RE.match(m[0]):
                raise SpecError(f"model name {m[0]!r} must be letters, digits and ._=+- "
                                "(no '/' or '..': it must not escape the experiment folder)")
            _check_type(f"the config of model {m[0]!r}", m[1], TrainConfig)
        names = [n for n, _ in self.models]
        if len(set(names)) != len(names):
            raise SpecError(f"model names repeat: {names}")
        if not self.learning_rates or not all(is_number(lr) and lr > 0 for lr in self.learning_rates):
            bad = next((lr for lr in self.learning_rates if not (is_number(lr) and lr > 0)), None)
            raise SpecError(f"learning rates must be positive finite numbers, got {bad!r} in {list(self.learning_rates)}")
        if len(set(self.learning_rates)) != len(self.learning_rates):
            raise SpecError(f"learning rates repeat: {self.learning_rates}")
        if not isinstance(self.selection, str) or self.selection not in SELECTION_RULES:
            raise SpecError(f"selection {self.selection!r} is not one of {', '.join(SELECTION_RULES)}")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise SpecError(f"seeds must be integers >= 0, at least one, got {self.seeds}")
        if len(set(self.seeds)) != len(self.seeds):
            raise SpecError(f"seeds repeat: {self.seeds}")
        if self.data_seed is not None and (isinstance(self.data_seed, bool) or not isinstance(self.data_seed, int)
                                           or self.data_seed < 0):
            raise SpecError(f"data_seed must be an integer >= 0 or None, got {self.data_seed!r}")
        for name, cls in (("grid", EvalGrid), ("figures", FigureSpec), ("resources", StageResources),
                          ("source", SourceConfig), ("description", str)):
            _check_type(name, getattr(self, name), cls)
        for c in self.claims:
            _check_type("each of claims", c, Claim)
        claim_names = [c.name for c in self.claims]
        if len(set(claim_names)) != len(claim_names):
            raise SpecError(f"claim names repeat: {claim_names}")
        cpj = self.conditions_per_job
        if isinstance(cpj, bool) or not isinstance(cpj, int) or cpj < 1:
            raise SpecError(f"conditions_per_job must be an integer >= 1, got {cpj!r}")
        self._check_distinct_models()
        planned = {}
        for name, cfg in self.models:
            planned[name], _ = self.grid.expand(cfg.stimulus)
            if not planned[name]:
                raise SpecError(f"the grid has no valid condition for model {name!r} (field {cfg.stimulus.field_size}"
                                f" px, digit {cfg.stimulus.digit_height} px): target eccentricities "
                                f"{list(self.grid.target_eccs)}, flanker eccentricities {list(self.grid.flanker_eccs)}")
        for claim in self.claims:
            check_measurable(claim, planned)

    def _check_distinct_models(self) -> None:
        """Two names for one config would be one run folder: one of them would vanish from the results."""
        owner: dict[str, str] = {}
        for run in self.train_runs():
            first = owner.setdefault(run.hash, run.model)
            if first != run.model:
                raise SpecError(f"models {first!r} and {run.model!r} have identical configs (one training run, "
                                f"{run.dir}): change one of them, or drop one")

    # ------------------------------------------------------------------ derived plans
    def train_runs(self) -> list[TrainRun]:
        """Every (model, learning rate, seed). Replicates share the training positions of data_seed
        (one training dataset) unless data_seed is None; seed 0 with data_seed 0 is the run of a
        sweep without replicates (same identity)."""
        return [TrainRun(name, replace(cfg, learning_rate=lr, seed=seed,
                                       data_seed=seed if self.data_seed is None else self.data_seed))
                for name, cfg in self.models for lr in self.learning_rates for seed in self.seeds]

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
        seeds = {r.hash: r.seed for r in self.train_runs()}
        return [EvalRun(name, h, lr, cond, self.grid.test_images, seeds.get(h, 0))
                for name, h, lr in selected for cond in self.conditions(name)[0]]

    @property
    def rule_text(self) -> str:
        """The selection rule in words (selection.json, --dry-run)."""
        text = RULE_TEXT[self.selection]
        if len(self.seeds) > 1 and self.selection != "all":
            text += f", on the mean over seeds {list(self.seeds)}"
        return text

    def to_json(self) -> dict:
        return to_jsonable(self)


def _mean(values: Sequence[Any]) -> float:
    finite = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
              and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def choose(rule: str, candidates: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[dict[str, Any]]]:
    """The learning rates a rule chooses among one model's candidates, and each learning rate's score.

    A candidate is a dict with learning_rate, seed, state and the final metrics (train/loss, val/acc,
    val/loss; None or NaN when unknown). Only finished runs ("done") count; a learning rate's score
    is the mean of its finished seeds' metrics (a diverged run's NaN is left out of the mean, and a
    learning rate with no finite score is not eligible). val/acc: the highest mean val/acc, ties by
    the lowest mean val/loss, then the smaller learning rate. train/loss: the lowest mean train/loss,
    ties to the smaller learning rate. all: every learning rate with a finished run."""
    if rule not in SELECTION_RULES:
        raise ValueError(f"selection rule {rule!r} is not one of {', '.join(SELECTION_RULES)}")
    lrs = list(dict.fromkeys(float(c["learning_rate"]) for c in candidates))
    scores = []
    for lr in lrs:
        done = [c for c in candidates if float(c["learning_rate"]) == lr and c.get("state") == "done"]
        scores.append({"learning_rate": lr, "seeds_done": sorted(int(c.get("seed", 0)) for c in done),
                       **{k: _mean([c.get(k) for c in done]) for k in ("train/loss", "val/loss", "val/acc")}})
    if rule == "all":
        return [s["learning_rate"] for s in scores if s["seeds_done"]], scores
    if rule == "val/acc":
        ok = [s for s in scores if math.isfinite(s["val/acc"])]
        key = lambda s: (-s["val/acc"], s["val/loss"] if math.isfinite(s["val/loss"]) else math.inf,  # noqa: E731
                         s["learning_rate"])
    else:
        ok = [s for s in scores if math.isfinite(s["train/loss"])]
        key = lambda s: (s["train/loss"], s["learning_rate"])  # noqa: E731
    return ([min(ok, key=key)["learning_rate"]] if ok else []), scores


def planned_rows(planned: Mapping[str, Sequence[Condition]]) -> dict[str, pd.DataFrame]:
    """Each model's planned conditions as the rows of a results table (results.findings' matching)."""
    return {name: pd.DataFrame([{"label": c.label, "state": "done", "target_ecc": c.target_ecc,
                                 "spacing": math.nan if c.spacing is None else c.spacing,
                                 "flanker_dset": c.flanker_dset} for c in conds])
            for name, conds in planned.items()}


def check_measurable(claim: Claim, planned: Mapping[str, Sequence[Condition]]) -> None:
    """Raise SpecError unless every model the claim is tested on (claim.models, or every model) has,
    among its planned conditions, each term at some common target eccentricity: results.findings'
    own matching of terms to conditions, applied to the plan instead of the results."""
    rows = planned_rows(planned)
    for model in claim.models or tuple(planned):
        for who in (model, *(t.model for t in claim.terms if t.model)):
            if who not in planned:
                raise SpecError(f"claim {claim.name!r} names model {who!r}, which the sweep does not train "
                                f"(models: {', '.join(planned)})")
        pools = [_term_rows(rows[t.model or model], t) for t in claim.terms]
        unplanned = [t for t, pool in zip(claim.terms, pools, strict=True)
                     if pool.empty or (t.target_ecc is not None and _matches(pool, t, None).empty)]
        if unplanned or not _x_values(claim, pools):
            what = (f"no planned condition measures {unplanned[0].describe()}" if unplanned
                    else "its terms share no planned target eccentricity"
                    + (f" among {list(claim.target_eccs)}" if claim.target_eccs is not None else ""))
            raise SpecError(f"claim {claim.name!r} cannot be measured on model {model!r}: {what} (planned target "
                            f"eccentricities {_short(sorted({c.target_ecc for c in planned[model]}))}, spacings "
                            f"{_short(sorted({c.spacing for c in planned[model] if c.spacing is not None}))})")


def override_resources(res: Resources, **changes) -> Resources:
    """Resources with the command line's non-None overrides applied (validated again)."""
    kept = {k: v for k, v in changes.items() if v is not None}
    return dataclasses.replace(res, **kept) if kept else res
