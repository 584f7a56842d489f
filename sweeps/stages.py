"""The stages of a sweep as objects: which run folders each has, what its jobs compute, what makes
one of its runs done, what it writes before submission, and what a --dry-run says of it.

    DatasetStage  datasets/jobs/<key>: build each dataset once (tasks.build_dataset)
    TrainStage    train/<hash>: one resumable training run per job (tasks.train_run)
    EvalStage     eval/<hash>: one selected model on several conditions per job (tasks.eval_chunk)

The pipeline (sweeps/pipeline.py) runs them in that order, with the select stage between training
and evaluation; submitting, re-attaching and waiting is the same for every stage
(cluster.submission.Submission)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cluster.jobs import CheckpointableRunJob, ChunkJob, RunJob
from core.layout import data_root, dataset_job_dir, run_dir_name
from core.runs import write_config
from ecc.config import RunOptions, write_train_config
from ecc.dataset_spec import dataset_key

from . import tasks
from .spec import EvalRun, SweepSpec, TrainRun

Job = tuple[Callable[[], Any], list["Unit"]]  # a picklable call and the run folders it fills


@dataclass(frozen=True)
class Unit:
    """One run folder of a stage and what fills it."""

    label: str
    run_dir: Path
    payload: Any  # the stage's: a DatasetSpec, a TrainRun or an EvalRun


@dataclass(frozen=True)
class Stage:
    """One stage of a sweep in one experiment folder. `options`: how its jobs run (device, threads)."""

    name: ClassVar[str]  # datasets | train | eval: its resources, its logs/<name>, its log lines
    kind: ClassVar[str]  # the kind of its results: what makes a run done (core.runs.DONE_KEYS)

    spec: SweepSpec
    exp: Path
    options: RunOptions

    @property
    def data_root(self) -> Path:
        return data_root(self.exp)

    def units(self) -> list[Unit]:
        raise NotImplementedError

    def jobs(self, units: Sequence[Unit]) -> list[Job]:
        raise NotImplementedError

    def write_config(self, unit: Unit) -> None:
        raise NotImplementedError

    def plan_lines(self) -> list[str]:
        raise NotImplementedError


@dataclass(frozen=True)
class DatasetStage(Stage):
    name = "datasets"
    kind = "dataset"

    def units(self) -> list[Unit]:
        keys = [(s, dataset_key(s, self.spec.source)) for s in self.spec.datasets()]
        return [Unit(f"{s.split} {key}", dataset_job_dir(self.exp, key), s) for s, key in keys]

    def jobs(self, units: Sequence[Unit]) -> list[Job]:
        return [(RunJob(str(u.run_dir), tasks.build_dataset, u.payload, str(self.data_root), self.spec.source,
                        self.options), [u]) for u in units]

    def write_config(self, unit: Unit) -> None:
        write_config(unit.run_dir, self.kind, unit.run_dir.name, unit.payload)

    def plan_lines(self) -> list[str]:
        specs = self.spec.datasets()
        return [f"[datasets] {len(specs)} datasets (built once each, under a lock):"] + [
            f"    {s.split:10s} {s.limit or 'all'} images, field {s.stimulus.field_size}, crops "
            f"{s.stimulus.num_scales}x{s.stimulus.crop_size}^2, random_shifts={s.random_shifts}, "
            f"key {dataset_key(s, self.spec.source)}" for s in specs]


@dataclass(frozen=True)
class TrainStage(Stage):
    name = "train"
    kind = "train"

    def units(self) -> list[Unit]:
        seeds = len(self.spec.seeds) > 1
        return [Unit(f"{r.model} lr={r.config.learning_rate:g}" + (f" seed={r.seed}" if seeds else ""),
                     self.exp / r.dir, r) for r in self.spec.train_runs()]

    def jobs(self, units: Sequence[Unit]) -> list[Job]:
        # Checkpointable: a time limit or preemption requeues the job, which resumes from its checkpoint.
        return [(CheckpointableRunJob(str(u.run_dir), tasks.train_run, u.payload.config, str(u.run_dir),
                                      str(self.data_root), self.spec.source, self.options), [u]) for u in units]

    def write_config(self, unit: Unit) -> None:
        run: TrainRun = unit.payload
        write_train_config(unit.run_dir, run.config, model=run.model)  # with a factory's source digest

    def plan_lines(self) -> list[str]:
        runs, seeds = self.spec.train_runs(), self.spec.seeds
        several = len(seeds) > 1
        lines = [f"[train] {len(runs)} jobs ({len(self.spec.models)} models x {len(self.spec.learning_rates)} "
                 f"learning rates {list(self.spec.learning_rates)}"
                 + (f" x {len(seeds)} seeds {list(seeds)}" if several else "") + "):"]
        for r in runs:
            c = r.config
            lines.append(f"    {r.model} lr={c.learning_rate:g}" + (f" seed={r.seed}" if several else "")
                         + f": {c.num_epochs} epochs, batch {c.batch_size}, "
                         f"train_images={c.train_images or 'all'}  -> {r.dir}")
        return lines


@dataclass(frozen=True)
class EvalStage(Stage):
    """Evaluation of the selected runs: `selected` holds (model, train hash, learning rate)."""

    name = "eval"
    kind = "eval"

    selected: tuple[tuple[str, str, float], ...] = ()

    def units(self) -> list[Unit]:
        seeds = len(self.spec.seeds) > 1
        return [Unit(f"{r.model}" + (f" lr={r.learning_rate:g} seed={r.seed}" if seeds else "")
                     + f" {r.condition.label} te={r.condition.target_ecc:g}"
                     + ("" if r.condition.flanker_ecc is None else f" fe={r.condition.flanker_ecc:g}"),
                     self.exp / r.dir, r) for r in self.spec.eval_runs(self.selected)]

    def jobs(self, units: Sequence[Unit]) -> list[Job]:
        """One job per `conditions_per_job` conditions of one model: the model is loaded once per job."""
        by_model: dict[str, list[Unit]] = {}
        for u in units:
            by_model.setdefault(u.payload.model_hash, []).append(u)
        size, out = self.spec.conditions_per_job, []
        for model_hash, group in by_model.items():
            for i in range(0, len(group), size):
                chunk = group[i:i + size]
                items = [(u.payload.condition, str(u.run_dir)) for u in chunk]
                out.append((ChunkJob(tasks.eval_chunk, str(self.exp / run_dir_name("train", model_hash)), items,
                                     self.spec.grid.test_images, str(self.data_root), self.spec.source, self.options,
                                     run_dirs=[str(u.run_dir) for u in chunk]), chunk))
        return out

    def write_config(self, unit: Unit) -> None:
        run: EvalRun = unit.payload
        write_config(unit.run_dir, self.kind, run.hash, dataclasses.asdict(run))

    def plan_lines(self) -> list[str]:
        """The grid per model (the selection is not known before training: every model counts once)."""
        spec, grid = self.spec, self.spec.grid
        lines, total, jobs = [], 0, 0
        n_grid = len(grid.flanker_types) * len(grid.target_eccs) * len(grid.flanker_eccs) * len(grid.flanker_dsets)
        for name, _ in spec.models:
            conds, dropped = spec.conditions(name)
            by_label: dict[str, int] = {}
            for c in conds:
                by_label[c.label] = by_label.get(c.label, 0) + 1
            lines.append(f"[eval] {name}: {len(conds)} conditions of the {n_grid}-point grid "
                         f"(dropped {dropped['invalid']} invalid, {dropped['duplicate']} duplicates): "
                         + ", ".join(f"{k} {v}" for k, v in sorted(by_label.items())))
            total += len(conds)
            jobs += math.ceil(len(conds) / spec.conditions_per_job)
        lines.append(f"[eval] {total} conditions in total for the selected models, {spec.conditions_per_job} per job "
                     f"-> {jobs} jobs, {grid.test_images or 'all'} test images each"
                     + (f"; per seed of the chosen learning rate ({len(spec.seeds)} seeds: x{len(spec.seeds)})"
                        if len(spec.seeds) > 1 else "")
                     + ("; per learning rate (selection 'all')" if spec.selection == "all" else ""))
        return lines
