"""The stages of a sweep, resumable from disk: datasets -> train -> select -> eval -> collect.

Every job has a run folder named by its config hash; a job is done when its result.json is valid.
A stage looks at its run folders (plus one batched scheduler query), submits what is missing or
failed as ONE job array, re-attaches to what is still running from an earlier launch, and waits
(submitit's own waiting; no polling of our own). Nothing is kept only in memory, so the launcher
can die at any point and the next launch continues where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from cluster.backends import get_backend
from cluster.submission import JobOutcome, OnEnd, Submission, scheduler_states
from core import cancel, procs
from core.atomic import atomic_write_json, read_json
from core.identity import to_jsonable
from core.layout import FIGURES, LAUNCH_JSON, LAUNCH_LOCK, PLAN, SPEC, logs_dir
from core.plan import EvalEntry, Plan, TrainEntry
from core.runs import RunState, run_state
from ecc.config import RunOptions
from ecc.environment import job_env

from . import claims, driver, selection
from .experiment import orphan_lines
from .spec import STAGE_NAMES, EvalRun, StageResources, SweepSpec, TrainRun
from .stages import DatasetStage, EvalStage, Stage, TrainStage, Unit

logger = logging.getLogger(__name__)

STAGES = STAGE_NAMES  # the order of the stages that submit jobs (select runs in the launcher)


PAUSE_ENV = "CROWDING_PAUSE_BEFORE_SUBMIT"  # fault injection: STAGE:FOLDER (docs/reliability.md)


def _pause_before_submit(stage: str) -> None:
    """Hold the launcher just before it submits STAGE, as the reliability tests need it (a --cancel
    that arrives right then): with CROWDING_PAUSE_BEFORE_SUBMIT=STAGE:FOLDER it writes FOLDER/held and
    waits until FOLDER/go exists. Unset (always, outside tests), it does nothing."""
    want, _, folder = os.environ.get(PAUSE_ENV, "").partition(":")
    if want != stage or not folder:
        return
    (Path(folder) / "held").write_text(f"{os.getpid()} {stage}\n")
    while not (Path(folder) / "go").exists():
        time.sleep(0.05)


class LauncherBusy(RuntimeError):
    """Another launcher holds this experiment."""


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
        self.generation: int | None = None  # the cancel mark this launch started under (core.cancel)

    # ------------------------------------------------------------------ stages
    def options(self, stage: str) -> RunOptions:
        res = self.resources.stage(stage)
        return RunOptions(device=self.device, threads=res.cpus, progress=self.progress)

    @property
    def datasets(self) -> DatasetStage:
        return DatasetStage(self.spec, self.exp, self.options("datasets"))

    @property
    def train(self) -> TrainStage:
        return TrainStage(self.spec, self.exp, self.options("train"))

    def evaluation(self, selected: Sequence[selection.Selected]) -> EvalStage:
        return EvalStage(self.spec, self.exp, self.options("eval"), tuple(selected))

    # ------------------------------------------------------------------ whole run
    def run(self) -> int:
        """All stages; 0 when every job is done, 1 when some failed (they are rows in the table)."""
        self.exp.mkdir(parents=True, exist_ok=True)
        with self._lock():
            # Submissions from here on are refused once --cancel marks the experiment (core.cancel).
            self.generation = cancel.generation(self.exp)
            atomic_write_json(self.exp / SPEC, self.spec.to_json())
            self.echo(f"experiment {self.spec.name} in {self.exp} (executor: {self.kind})")
            for line in orphan_lines(self.exp, self.planned_dirs()):
                self.echo(line)
            # Until this launch's selection, the plan keeps the earlier one's evaluations: a launcher
            # stopped before then must not leave a plan (and --report a table) without them.
            self._write_plan(self.evaluation(self.earlier_selection()).units())
            ok = self.run_stage(self.datasets)
            ok &= self.run_stage(self.train)
            evaluation = self.evaluation(self.select())
            evals = evaluation.units()  # the grid expanded once: for the plan and for the stage
            self._write_plan(evals)
            ok &= self.run_stage(evaluation, evals)
            self.collect()
        return 0 if ok else 1

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Hold the experiment: a second launch refuses, naming the first (which holds the lock)."""
        lock = FileLock(str(self.exp / LAUNCH_LOCK), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            holder = read_json(self.exp / LAUNCH_JSON) or {}
            raise LauncherBusy(
                f"experiment {self.spec.name!r} is already being run by pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}{' in SLURM job ' + holder['job'] if holder.get('job') else ''} since {holder.get('started', '?')} ({holder.get('command', '?')}); "
                "wait for it to finish, or watch it with --status") from None
        try:
            why = driver.busy(self.exp)  # a detached driver still queued holds no lock yet
            if why:
                raise LauncherBusy(why)
            atomic_write_json(self.exp / LAUNCH_JSON, {
                "pid": os.getpid(), "token": procs.start_time(os.getpid()), "host": socket.gethostname(),
                "command": " ".join(sys.argv), "job": os.environ.get("SLURM_JOB_ID", ""),
                "started": time.strftime("%Y-%m-%d %H:%M:%S")})
            yield
        finally:
            lock.release()

    # ------------------------------------------------------------------ running a stage
    def states(self, units: Sequence[Unit], kind: str | None = None) -> dict[Path, RunState]:
        """States of run folders, with ONE scheduler query for all their last submissions."""
        sched = scheduler_states([u.run_dir for u in units])
        return {u.run_dir: run_state(u.run_dir, sched, kind) for u in units}

    def run_stage(self, stage: Stage, units: Sequence[Unit] | None = None) -> bool:
        """Submit what a stage still needs as one array, wait, and report. True if all done.
        `units`: the stage's run folders when the caller has them already (stage.units())."""
        units = stage.units() if units is None else units
        states = self.states(units, stage.kind)
        todo = [u for u in units if states[u.run_dir].state == "missing" or states[u.run_dir].cancelled
                or (states[u.run_dir].state == "failed" and self.retry_failed)]
        active = [u for u in units if states[u.run_dir].state in ("running", "pending")]
        n_done = sum(s.state == "done" for s in states.values())
        n_failed = sum(s.state == "failed" for s in states.values())
        kept = n_failed - sum(states[u.run_dir].state == "failed" for u in todo)
        parts = [f"{n_done} done"] + ([f"{len(active)} still running from an earlier launch"] if active else []) \
            + [f"{len(todo)} to submit"] + ([f"{kept} failed kept (--retry-failed to rerun them)"] if kept else [])
        self.echo(f"[{stage.name}] {len(units)} jobs: " + ", ".join(parts))
        t0 = time.time()
        submission = self._submission(stage.name)
        if active:
            lost = {*submission.attach([u.run_dir for u in active])}
            if len(lost) < len(active):
                self.echo(f"[{stage.name}] waiting for {len(submission.jobs)} job(s) submitted by an earlier launch")
            todo += [u for u in active if u.run_dir in lost]  # nothing to wait for: run again
        failed = 0

        def ended(outcome: JobOutcome, n: int, total: int) -> None:
            nonlocal failed
            failed += bool(outcome.error)
            self.echo(f"[{stage.name}] {n}/{total} jobs finished" + (f" ({failed} failed)" if failed else "")
                      + f", {time.time() - t0:.0f} s into the stage")

        if todo:
            self._submit(stage, submission, todo, ended)
        submission.wait(ended)
        final = self.states(units, stage.kind)
        report = self.report(stage.name, units, final)
        self.echo(f"[{stage.name}] {report.summary()}")
        for label, err in report.failed:
            self.echo(f"  failed: {label}: {err}")
        return all(s.state == "done" for s in final.values())

    def _submission(self, stage: str) -> Submission:
        # Local jobs share the machine with the launcher and whatever else runs there: OpenMP threads
        # must not spin at barriers (ecc/runtime.py, SHARED_CPU_ENV); SLURM jobs own their cores.
        return Submission(self.backend, logs_dir(self.exp, stage), stage, self.resources.stage(stage),
                          env=job_env(shared_cpus=self.backend.shares_cpus), name=f"{self.spec.name}-{stage}")

    def _submit(self, stage: Stage, submission: Submission, units: Sequence[Unit], on_end: OnEnd) -> None:
        """Submit the units' jobs, each submission guarded by the cancel mark (core.cancel): once
        --cancel has marked the experiment, Cancelled is raised and nothing more is submitted."""
        if self.generation is None:  # a stage run on its own (not through run())
            self.generation = cancel.generation(self.exp)
        started = self.generation
        _pause_before_submit(stage.name)
        cancel.check(self.exp, started)  # refused before any config.json is written
        calls = stage.jobs(units)
        for u in units:
            u.run_dir.mkdir(parents=True, exist_ok=True)
            stage.write_config(u)
        self.echo(f"[{stage.name}] submitting {len(calls)} job(s) for {len(units)} run(s) as one array "
                  f"({self.backend.describe(submission.resources)})")
        submission.submit([(call, [u.run_dir for u in chunk]) for call, chunk in calls],
                          guard=lambda: cancel.guard(self.exp, started), on_end=on_end)

    # ------------------------------------------------------------------ select
    def select(self) -> list[selection.Selected]:
        """The select stage (sweeps.selection): the runs to evaluate; writes selection.json."""
        train = self.train
        units = train.units()
        return selection.select(self.spec, self.exp, units, self.states(units, train.kind), self.echo)

    def earlier_selection(self) -> list[selection.Selected]:
        return selection.earlier_selection(self.spec, self.exp)

    # ------------------------------------------------------------------ collect
    def collect(self) -> None:
        from results import bouma, bouma_report, findings, plots, stats, table

        plan = Plan.read(self.exp / PLAN)
        scheduler = scheduler_states([self.exp / e.dir for e in plan.eval] if plan else [])
        df = table.collect(self.exp, scheduler=scheduler)
        selection = table.selection_table(self.exp)
        paths = table.save(self.exp, df, selection)
        paths += stats.save_summary(self.exp, stats.summary_table(df))
        fits = bouma.fits(self.exp, df)  # from the per-seed table: its bootstrap resamples seeds and images
        paths += findings.write(self.exp, df, self.spec.claims, self.spec.name, fits)
        paths += bouma_report.save(self.exp, fits)
        # With replicates the figures show the mean over seeds and the interval across them.
        figs = plots.draw_all(self.exp, stats.figure_table(df), selection, self.spec.figures,
                              self.exp / FIGURES, stimulus=self.spec.models[0][1].stimulus, source=self.spec.source,
                              fits=fits)
        why = bouma_report.figure_reason(fits)
        if why:
            self.echo(f"[collect] no Bouma figure: {why}")
        done = int((df["state"] == "done").sum()) if len(df) else 0
        self.echo(f"[collect] results table: {done}/{len(df)} conditions done -> "
                  + ", ".join(str(p.relative_to(self.exp)) for p in paths))
        self.echo(f"[collect] {len(figs)} figures in {self.exp / FIGURES}")

    # ------------------------------------------------------------------ status and plan
    def report(self, stage: str, units: Sequence[Unit], states: dict[Path, RunState]) -> StageReport:
        rep = StageReport(stage, total=len(units))
        for u in units:
            s = states[u.run_dir]
            state = "cancelled" if s.cancelled else s.state
            rep.counts[state] = rep.counts.get(state, 0) + 1
            if state == "failed":
                rep.failed.append((u.label, s.error))
        return rep

    def stages(self) -> list[Stage]:
        """The stages that submit jobs, as planned now (eval: for the last selection)."""
        return [self.datasets, self.train, self.evaluation(self.earlier_selection())]

    def planned(self) -> list[tuple[Stage, list[Unit]]]:
        """Each stage with its run folders as planned now."""
        return [(stage, stage.units()) for stage in self.stages()]

    def planned_dirs(self) -> set[Path]:
        """Every run folder the plan has now (what is not among them is an orphan)."""
        return {u.run_dir for _, units in self.planned() for u in units}

    def plan_lines(self, networks: Sequence[str] = ()) -> list[str]:
        """The plan of a --dry-run: jobs per stage (after the training jobs, `networks`: each
        network's size, from sweeps.preflight.check_networks), dropped grid points, resources."""
        lines = [f"sweep {self.spec.name}: {self.spec.description}".rstrip(": "),
                 f"experiment folder: {self.exp}", f"executor: {self.kind}"]
        lines += self.datasets.plan_lines() + self.train.plan_lines() + list(networks)
        lines.append(f"[select] per model: {self.spec.rule_text}")
        lines += self.evaluation(()).plan_lines()
        lines += claims.plan_lines(self.spec)
        for stage in STAGES:
            lines.append(f"[resources] {stage}: {self.resources.stage(stage).summary()}")
        return lines

    def _write_plan(self, evals: Sequence[Unit]) -> None:
        runs: list[TrainRun] = self.spec.train_runs()
        tests: dict[str, EvalRun] = {}  # one entry per evaluation (the first planned)
        for u in evals:
            tests.setdefault(u.payload.hash, u.payload)
        Plan(self.spec.name,
             tuple(TrainEntry(r.hash, r.dir, r.model, r.seed, r.config.learning_rate, to_jsonable(r.config))
                   for r in runs),
             tuple(EvalEntry(h, e.dir, e.model, e.model_hash, e.learning_rate, e.seed,
                             to_jsonable(e.condition), e.test_images) for h, e in tests.items()),
             ).write(self.exp / PLAN)
