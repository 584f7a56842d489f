"""The stages of a sweep, resumable from disk: datasets -> train -> select -> eval -> collect.

Every job has a run folder named by its config hash; a job is done when its result.json is valid.
A stage looks at its run folders (plus one batched scheduler query), submits what is missing or
failed as ONE job array, re-attaches to what is still running from an earlier launch, and waits
(submitit's own waiting; no polling of our own). Nothing is kept only in memory, so the launcher
can die at any point and the next launch continues where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from cluster import jobs
from cluster.backends import get_backend
from cluster.submission import JobOutcome, Submission, scheduler_states
from core.atomic import atomic_write_json, read_json
from core.identity import to_jsonable
from core.plan import PLAN, EvalEntry, Plan, TrainEntry
from core.runs import RunState, read_result, run_state, write_config
from ecc import datasets
from ecc.config import RunOptions
from ecc.runtime import job_env

from . import tasks
from .spec import EvalRun, StageResources, SweepSpec, TrainRun, choose

logger = logging.getLogger(__name__)

STAGES = ("datasets", "train", "eval")
RESULT_KIND = {"datasets": "dataset", "train": "train", "eval": "eval"}  # what each stage's run folders hold


class LauncherBusy(RuntimeError):
    """Another launcher holds this experiment."""


@dataclass(frozen=True)
class Unit:
    """One run folder of a stage and what fills it."""

    label: str
    run_dir: Path
    payload: Any  # stage specific: a DatasetSpec, a TrainRun or an EvalRun


@dataclass
class StageReport:
    stage: str
    total: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (label, last error line)

    def _counts(self) -> str:
        parts = [f"{self.counts.get(s, 0)} {s}" for s in ("done", "running", "pending", "failed", "cancelled", "missing")
                 if self.counts.get(s, 0)]
        return ", ".join(parts) or "none"

    def summary(self) -> str:
        """e.g. `6 jobs: 4 done, 2 failed`."""
        return f"{self.total} jobs: {self._counts()}"

    def line(self) -> str:
        return f"{self.stage:8s} {self.total:4d} jobs: {self._counts()}"


class Pipeline:
    """Runs one sweep in one experiment folder with one kind of executor."""

    def __init__(self, spec: SweepSpec, exp_dir: str | os.PathLike, *, executor: str = "auto",
                 resources: StageResources | None = None, retry_failed: bool = True,
                 device: str = "auto", echo: Callable[[str], None] = print, progress: bool = True) -> None:
        spec.check_data()  # a missing flanker set or background folder: nothing is submitted
        self.spec = spec
        self.exp = Path(exp_dir)
        self.backend = get_backend(executor)
        self.kind = self.backend.kind
        self.resources = resources or spec.resources
        self.retry_failed = retry_failed
        self.device = device
        self.echo = echo
        self.progress = progress

    # ------------------------------------------------------------------ folders
    @property
    def data_root(self) -> Path:
        return self.exp / "datasets"

    def options(self, stage: str) -> RunOptions:
        res = self.resources.stage(stage)
        return RunOptions(device=self.device, threads=res.cpus, progress=self.progress)

    def dataset_units(self) -> list[Unit]:
        keys = [(s, datasets.dataset_key(s, self.spec.source)) for s in self.spec.datasets()]
        return [Unit(f"{s.split} {key}", self.data_root / "jobs" / key, s) for s, key in keys]

    def train_units(self) -> list[Unit]:
        seeds = len(self.spec.seeds) > 1
        return [Unit(f"{r.model} lr={r.config.learning_rate:g}" + (f" seed={r.seed}" if seeds else ""),
                     self.exp / r.dir, r) for r in self.spec.train_runs()]

    def eval_units(self, selected: Sequence[tuple[str, str, float]]) -> list[Unit]:
        seeds = len(self.spec.seeds) > 1
        return [Unit(f"{r.model}" + (f" lr={r.learning_rate:g} seed={r.seed}" if seeds else "")
                     + f" {r.condition.label} te={r.condition.target_ecc:g}"
                     + ("" if r.condition.flanker_ecc is None else f" fe={r.condition.flanker_ecc:g}"),
                     self.exp / r.dir, r) for r in self.spec.eval_runs(selected)]

    # ------------------------------------------------------------------ whole run
    def run(self) -> int:
        """All stages; 0 when every job is done, 1 when some failed (they are rows in the table)."""
        self.exp.mkdir(parents=True, exist_ok=True)
        with self._lock():
            atomic_write_json(self.exp / "spec.json", self.spec.to_json())
            self.echo(f"experiment {self.spec.name} in {self.exp} (executor: {self.kind})")
            from .control import orphan_lines

            for line in orphan_lines(self):
                self.echo(line)
            # Until this launch's selection, the plan keeps the earlier one's evaluations: a launcher
            # stopped before then must not leave a plan (and --report a table) without them.
            self._write_plan(self.train_units(), self.eval_units(self.earlier_selection()))
            ok = self.run_stage("datasets", self.dataset_units())
            ok &= self.run_stage("train", self.train_units())
            selected = self.select()
            evals = self.eval_units(selected)
            self._write_plan(self.train_units(), evals)
            ok &= self.run_stage("eval", evals)
            self.collect()
        return 0 if ok else 1

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Hold the experiment: a second launch refuses, naming the first (which holds the lock)."""
        from . import driver

        lock = FileLock(str(self.exp / "launch.lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            holder = read_json(self.exp / "launch.json") or {}
            raise LauncherBusy(
                f"experiment {self.spec.name!r} is already being run by pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}{' in SLURM job ' + holder['job'] if holder.get('job') else ''} since {holder.get('started', '?')} ({holder.get('command', '?')}); "
                "wait for it to finish, or watch it with --status") from None
        try:
            why = driver.busy(self.exp)  # a detached driver still queued holds no lock yet
            if why:
                raise LauncherBusy(why)
            atomic_write_json(self.exp / "launch.json", {
                "pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                "job": os.environ.get("SLURM_JOB_ID", ""), "started": time.strftime("%Y-%m-%d %H:%M:%S")})
            yield
        finally:
            lock.release()

    # ------------------------------------------------------------------ stages
    def states(self, units: Sequence[Unit], kind: str | None = None) -> dict[Path, RunState]:
        """States of run folders, with ONE scheduler query for all their last submissions."""
        sched = scheduler_states([u.run_dir for u in units])
        return {u.run_dir: run_state(u.run_dir, sched, kind) for u in units}

    def run_stage(self, stage: str, units: Sequence[Unit]) -> bool:
        """Submit what a stage still needs as one array, wait, and report. True if all done."""
        kind = RESULT_KIND[stage]
        states = self.states(units, kind)
        todo = [u for u in units if states[u.run_dir].state == "missing" or states[u.run_dir].cancelled
                or (states[u.run_dir].state == "failed" and self.retry_failed)]
        active = [u for u in units if states[u.run_dir].state in ("running", "pending")]
        n_done = sum(s.state == "done" for s in states.values())
        n_failed = sum(s.state == "failed" for s in states.values())
        kept = n_failed - sum(states[u.run_dir].state == "failed" for u in todo)
        parts = [f"{n_done} done"] + ([f"{len(active)} still running from an earlier launch"] if active else []) \
            + [f"{len(todo)} to submit"] + ([f"{kept} failed kept (--retry-failed to rerun them)"] if kept else [])
        self.echo(f"[{stage}] {len(units)} jobs: " + ", ".join(parts))
        t0 = time.time()
        submission = self._submission(stage)
        if active:
            lost = {*submission.attach([u.run_dir for u in active])}
            if len(lost) < len(active):
                self.echo(f"[{stage}] waiting for {len(submission.jobs)} job(s) submitted by an earlier launch")
            todo += [u for u in active if u.run_dir in lost]  # nothing to wait for: run again
        if todo:
            self._submit(submission, todo)
        failed = 0

        def ended(outcome: JobOutcome, n: int, total: int) -> None:
            nonlocal failed
            failed += bool(outcome.error)
            self.echo(f"[{stage}] {n}/{total} jobs finished" + (f" ({failed} failed)" if failed else "")
                      + f", {time.time() - t0:.0f} s into the stage")

        submission.wait(ended)
        final = self.states(units, kind)
        report = self.report(stage, units, final)
        self.echo(f"[{stage}] {report.summary()}")
        for label, err in report.failed:
            self.echo(f"  failed: {label}: {err}")
        return all(s.state == "done" for s in final.values())

    def _calls(self, stage: str, units: Sequence[Unit]) -> list[tuple[Callable[..., Any], list[Unit]]]:
        """The jobs of a stage: (picklable callable, the run folders it fills)."""
        opts = self.options(stage)
        source = self.spec.source
        if stage == "datasets":
            return [(jobs.RunJob(str(u.run_dir), tasks.build_dataset, u.payload, str(self.data_root), source, opts),
                     [u]) for u in units]
        if stage == "train":
            return [(jobs.CheckpointableRunJob(str(u.run_dir), tasks.train_run, u.payload.config, str(u.run_dir),
                                               str(self.data_root), source, opts), [u]) for u in units]
        by_model: dict[str, list[Unit]] = {}
        for u in units:
            by_model.setdefault(u.payload.model_hash, []).append(u)
        out = []
        size = self.spec.conditions_per_job
        for model_hash, group in by_model.items():
            for i in range(0, len(group), size):
                chunk = group[i:i + size]
                items = [(u.payload.condition, str(u.run_dir)) for u in chunk]
                out.append((jobs.ChunkJob(tasks.eval_chunk, str(self.exp / "train" / model_hash), items,
                                          self.spec.grid.test_images, str(self.data_root), source, opts,
                                          run_dirs=[str(u.run_dir) for u in chunk]), chunk))
        return out

    def _submission(self, stage: str) -> Submission:
        # Local jobs share the machine with the launcher and whatever else runs there: OpenMP threads
        # must not spin at barriers (ecc/runtime.py, SHARED_CPU_ENV); SLURM jobs own their cores.
        return Submission(self.backend, self.exp / "logs" / stage, stage, self.resources.stage(stage),
                          env=job_env(shared_cpus=self.backend.shares_cpus), name=f"{self.spec.name}-{stage}")

    def _submit(self, submission: Submission, units: Sequence[Unit]) -> None:
        stage = submission.stage
        calls = self._calls(stage, units)
        for u in units:
            u.run_dir.mkdir(parents=True, exist_ok=True)
            _write_config(u)
        self.echo(f"[{stage}] submitting {len(calls)} job(s) for {len(units)} run(s) as one array "
                  f"({self.backend.describe(submission.resources)})")
        submission.submit([(call, [u.run_dir for u in chunk]) for call, chunk in calls])

    # ------------------------------------------------------------------ select
    def select(self) -> list[tuple[str, str, float]]:
        """The (model, train hash, learning rate) to evaluate: per model, the learning rate(s) the
        sweep's rule chooses on the mean over seeds (sweeps.spec.choose), every finished seed of it."""
        units = self.train_units()
        states = self.states(units, "train")
        several = len(self.spec.seeds) > 1
        models = []
        selected = []
        for name, _ in self.spec.models:
            candidates = []
            for u in units:
                run: TrainRun = u.payload
                if run.model != name:
                    continue
                result = read_result(u.run_dir, "train")
                final = (result or {}).get("final", {})
                candidates.append({"hash": run.hash, "learning_rate": run.config.learning_rate, "seed": run.seed,
                                   "state": states[u.run_dir].state, "error": states[u.run_dir].error,
                                   **{k: final.get(k) for k in ("train/loss", "train/acc", "val/loss", "val/acc")},
                                   "best_epoch": (result or {}).get("best_epoch")})
            lrs, scores = choose(self.spec.selection, candidates)
            chosen = [c for c in candidates if c["learning_rate"] in lrs and c["state"] == "done"]
            models.append({"model": name, "chosen": chosen[0]["hash"] if chosen else None,
                           "learning_rate": lrs[0] if len(lrs) == 1 else None, "learning_rates": lrs,
                           "chosen_runs": [{k: c[k] for k in ("hash", "learning_rate", "seed")} for c in chosen],
                           "scores": scores, "candidates": candidates})
            selected += [(name, c["hash"], c["learning_rate"]) for c in chosen]
            if not chosen:
                self.echo(f"[select] {name}: no finished training run; it is not evaluated")
                continue
            metric = "train/loss" if self.spec.selection == "train/loss" else "val/acc"
            by_lr = {sc["learning_rate"]: sc for sc in scores}
            what = ", ".join(f"lr={lr:g}" for lr in lrs)
            if self.spec.selection != "all":
                best = by_lr[lrs[0]]
                what += f" ({metric} {_fmt(best[metric])}" + (f", val/loss {_fmt(best['val/loss'])}"
                                                               if metric == "val/acc" else "") + ")"
            self.echo(f"[select] {name}: {what}" + (f", seeds {[c['seed'] for c in chosen]}" if several else "")
                      + " among " + ", ".join(
                          f"lr={sc['learning_rate']:g}: "
                          + (_fmt(sc[metric]) if sc["seeds_done"] else _states(candidates, sc["learning_rate"]))
                          for sc in scores))
        atomic_write_json(self.exp / "selection.json", {
            "rule": self.spec.rule_text, "rule_name": self.spec.selection, "seeds": list(self.spec.seeds),
            "scope": "a learning rate is scored on the mean of its seeds' final metrics; every seed of the "
                     "chosen learning rate is evaluated", "models": models})
        return selected

    # ------------------------------------------------------------------ collect
    def collect(self) -> None:
        from results import findings, plots, stats, table

        plan = read_json(self.exp / "plan.json") or {}
        scheduler = scheduler_states([self.exp / e["dir"] for e in plan.get("eval", [])])
        df = table.collect(self.exp, scheduler=scheduler)
        selection = table.selection_table(self.exp)
        paths = table.save(self.exp, df, selection)
        paths += stats.save_summary(self.exp, stats.summary_table(df))
        paths += findings.write(self.exp, df, self.spec.claims, self.spec.name)
        # With replicates the figures show the mean over seeds and the interval across them.
        figs = plots.draw_all(self.exp, stats.figure_table(df), selection, self.spec.figures,
                              self.exp / "figures", stimulus=self.spec.models[0][1].stimulus, source=self.spec.source)
        done = int((df["state"] == "done").sum()) if len(df) else 0
        self.echo(f"[collect] results table: {done}/{len(df)} conditions done -> "
                  + ", ".join(str(p.relative_to(self.exp)) for p in paths))
        self.echo(f"[collect] {len(figs)} figures in {self.exp / 'figures'}")

    # ------------------------------------------------------------------ status and plan
    def report(self, stage: str, units: Sequence[Unit], states: dict[Path, RunState] | None = None) -> StageReport:
        states = states if states is not None else self.states(units, RESULT_KIND[stage])
        rep = StageReport(stage, total=len(units))
        for u in units:
            s = states[u.run_dir]
            state = "cancelled" if s.cancelled else s.state
            rep.counts[state] = rep.counts.get(state, 0) + 1
            if state == "failed":
                rep.failed.append((u.label, s.error))
        return rep

    def planned(self) -> list[tuple[str, list[Unit]]]:
        """Each stage's run folders as planned now (eval: for the last selection)."""
        return [("datasets", self.dataset_units()), ("train", self.train_units()),
                ("eval", self.eval_units(self.earlier_selection()))]

    def status(self) -> list[StageReport]:
        """Per stage: pending, running, done, failed (with errors), from disk + batched scheduler queries."""
        return [self.report(stage, units) for stage, units in self.planned()]

    def earlier_selection(self) -> list[tuple[str, str, float]]:
        """The (model, train hash, learning rate) chosen by the last select stage (selection.json),
        for the models and training runs this sweep still has."""
        selection = read_json(self.exp / "selection.json") or {}
        runs = {(r.model, r.hash) for r in self.spec.train_runs()}
        out = []
        for m in selection.get("models", []):
            out += [(m["model"], c["hash"], c["learning_rate"]) for c in m.get("chosen_runs", [])
                    if (m["model"], c["hash"]) in runs]
        return out

    def plan_lines(self) -> list[str]:
        """The plan of a --dry-run: jobs per stage, dropped grid points, resources."""
        lines = [f"sweep {self.spec.name}: {self.spec.description}".rstrip(": "),
                 f"experiment folder: {self.exp}", f"executor: {self.kind}"]
        ds = self.spec.datasets()
        lines.append(f"[datasets] {len(ds)} datasets (built once each, under a lock):")
        for s in ds:
            n = "all" if not s.limit else s.limit
            lines.append(f"    {s.split:10s} {n} images, field {s.stimulus.field_size}, crops {s.stimulus.num_scales}"
                         f"x{s.stimulus.crop_size}^2, random_shifts={s.random_shifts}, key {datasets.dataset_key(s, self.spec.source)}")
        runs = self.spec.train_runs()
        seeds = self.spec.seeds
        lines.append(f"[train] {len(runs)} jobs ({len(self.spec.models)} models x {len(self.spec.learning_rates)} "
                     f"learning rates {list(self.spec.learning_rates)}"
                     + (f" x {len(seeds)} seeds {list(seeds)}" if len(seeds) > 1 else "") + "):")
        for r in runs:
            c = r.config
            lines.append(f"    {r.model} lr={c.learning_rate:g}" + (f" seed={r.seed}" if len(seeds) > 1 else "")
                         + f": {c.num_epochs} epochs, batch {c.batch_size}, "
                         f"train_images={c.train_images or 'all'}  -> {r.dir}")
        lines.append(f"[select] per model: {self.spec.rule_text}")
        total = 0
        for name, _ in self.spec.models:
            conds, dropped = self.spec.conditions(name)
            grid = self.spec.grid
            n_grid = len(grid.flanker_types) * len(grid.target_eccs) * len(grid.flanker_eccs) * len(grid.flanker_dsets)
            by_label: dict[str, int] = {}
            for c in conds:
                by_label[c.label] = by_label.get(c.label, 0) + 1
            lines.append(f"[eval] {name}: {len(conds)} conditions of the {n_grid}-point grid "
                         f"(dropped {dropped['invalid']} invalid, {dropped['duplicate']} duplicates): "
                         + ", ".join(f"{k} {v}" for k, v in sorted(by_label.items())))
            total += len(conds)
        per_job = self.spec.conditions_per_job
        lines.append(f"[eval] {total} conditions in total for the selected models, {per_job} per job "
                     f"-> {sum(math.ceil(len(self.spec.conditions(n)[0]) / per_job) for n, _ in self.spec.models)} jobs, "
                     f"{self.spec.grid.test_images or 'all'} test images each"
                     + (f"; per seed of the chosen learning rate ({len(self.spec.seeds)} seeds: x{len(self.spec.seeds)})"
                        if len(self.spec.seeds) > 1 else "")
                     + ("; per learning rate (selection 'all')" if self.spec.selection == "all" else ""))
        if self.spec.claims:
            lines.append(f"[collect] findings.md tests {len(self.spec.claims)} claims: "
                         + ", ".join(c.name for c in self.spec.claims))
        for stage in STAGES:
            lines.append(f"[resources] {stage}: {self.resources.stage(stage).summary()}")
        return lines

    def _write_plan(self, train: Sequence[Unit], evals: Sequence[Unit]) -> None:
        runs: list[TrainRun] = [u.payload for u in train]
        tests: dict[str, EvalRun] = {}  # one entry per evaluation (the first planned)
        for u in evals:
            tests.setdefault(u.payload.hash, u.payload)
        Plan(self.spec.name,
             tuple(TrainEntry(r.hash, r.dir, r.model, r.seed, r.config.learning_rate, to_jsonable(r.config))
                   for r in runs),
             tuple(EvalEntry(h, e.dir, e.model, e.model_hash, e.learning_rate, e.seed,
                             to_jsonable(e.condition), e.test_images) for h, e in tests.items()),
             ).write(self.exp / PLAN)


def _write_config(u: Unit) -> None:
    payload = u.payload
    if isinstance(payload, TrainRun):
        write_config(u.run_dir, "train", payload.hash, payload.config, model=payload.model)
    elif isinstance(payload, EvalRun):
        write_config(u.run_dir, "eval", payload.hash, dataclasses.asdict(payload))
    else:
        write_config(u.run_dir, "dataset", u.run_dir.name, payload)


def _states(candidates: Sequence[dict[str, Any]], lr: float) -> str:
    """The states of a learning rate's runs, for a log line: `failed`, or `done, failed` with seeds."""
    return ", ".join(dict.fromkeys(c["state"] for c in candidates if c["learning_rate"] == lr))


def _fmt(x: Any) -> str:
    """A metric for a log line: 4 decimals, or as stored ("nan" from a diverged run, None)."""
    return f"{x:.4f}" if isinstance(x, (int, float)) else str(x)
