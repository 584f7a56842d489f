"""Submitting a stage's jobs, re-attaching to an earlier launcher's, and waiting for them: the one
path the launcher takes, on any backend.

A stage's jobs are (picklable callable, the run folders it fills). `Submission.submit` hands them to
the backend as one array and records each run's submission.json as soon as its job has an id;
`Submission.attach` finds the jobs an earlier launcher submitted (from those submission.json files);
`Submission.wait` waits with submitit and, for a job that ended without writing its runs' result or
error (cancelled, killed for memory or time, a crash before the body ran), writes an error.json
saying how it ended, so the run folder alone tells why. `scheduler_states` asks the scheduler about
the last jobs of many run folders in one batched query per backend.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
from submitit.core.core import Job
from submitit.core.utils import UncompletedJobError

from core.runs import (
    JobRef,
    JobState,
    error_line,
    read_result,
    read_submission,
    record_submission,
    submission_error,
    write_error,
)

from .backends import BACKENDS
from .backends.base import Backend, Guard
from .resources import Resources

logger = logging.getLogger(__name__)

JOB_ENDED = "JobEndedWithoutResult"  # error.json type written for a job that left no result nor error


@dataclass(frozen=True)
class JobOutcome:
    """How one job ended."""

    job_id: str
    run_dirs: tuple[Path, ...]
    result: Any = None  # what the job returned (a RunResult for a RunJob)
    error: str = ""     # one line; empty when the job succeeded


OnEnd = Callable[[JobOutcome, int, int], None]  # (how a job ended, jobs ended so far, jobs in all)


@dataclass
class Submission:
    """One stage's jobs on one backend, their submitit files and logs in `logs`.

    `resources`, `env`, `name`: what the executor asks for (cluster.backends.base.Backend.executor).
    `jobs`: (job, its run folders) submitted or attached and not yet reported as ended; `total`:
    jobs submitted or attached so far, `ended`: how many of them were reported as ended."""

    backend: Backend
    logs: Path
    stage: str
    resources: Resources = field(default_factory=Resources)
    env: Mapping[str, str] | None = None
    name: str = "crowding"
    jobs: list[tuple[Job[Any], list[Path]]] = field(default_factory=list)
    total: int = 0
    ended: int = 0

    def __post_init__(self) -> None:
        self.logs = Path(self.logs)

    @functools.cached_property
    def executor(self) -> submitit.Executor:
        """The stage's executor, made when first needed (attaching needs none)."""
        return self.backend.executor(self.logs, self.resources, env=self.env, name=self.name)

    def submit(self, jobs: Sequence[tuple[Callable[[], Any], Sequence[str | os.PathLike]]], *,
               guard: Guard = contextlib.nullcontext, on_end: OnEnd | None = None) -> list[Job[Any]]:
        """Submit (callable, run folders) pairs as one array; each run's submission.json is written as
        soon as its job has an id, inside `guard()` (which may refuse: core.cancel). Runs that wait for
        a slot in this launcher (local) are recorded as queued first. `on_end`: called for jobs that end
        while later ones still wait for a slot. Returns the jobs, in order."""
        runs = [[Path(d) for d in dirs] for _, dirs in jobs]
        self.total += len(jobs)
        queue = self.backend.queue_ref()
        if queue is not None:
            for run_dir in (d for dirs in runs for d in dirs):
                record_submission(run_dir, executor=self.backend.kind, job_id=queue.job_id, stage=self.stage,
                                  token=queue.token)

        def record(i: int, job: Job[Any]) -> None:
            ref = self.backend.ref(job, self.executor.folder)
            for run_dir in runs[i]:
                record_submission(run_dir, executor=self.backend.kind, job_id=ref.job_id, stage=self.stage,
                                  folder=ref.folder, token=ref.token)
            self.jobs.append((job, runs[i]))

        return self.backend.submit(self.executor, [call for call, _ in jobs], record, guard,
                                   on_wait=lambda: self._report_ended(on_end))

    def attach(self, run_dirs: Sequence[str | os.PathLike]) -> list[Path]:
        """Wait also for the jobs that an earlier launcher submitted for these runs (named by their
        submission.json) rather than run them twice. Returns the runs left with nothing to wait for
        (e.g. a local job whose launcher died): resubmit them (the run lock makes a copy wait)."""
        by_job: dict[tuple[str, JobRef], list[Path]] = {}
        lost = []
        for run_dir in map(Path, run_dirs):
            sub = read_submission(run_dir)
            if sub is None or sub["executor"] not in BACKENDS:
                lost.append(run_dir)
            else:
                by_job.setdefault((sub["executor"], JobRef.from_submission(sub)), []).append(run_dir)
        for (kind, ref), group in by_job.items():
            backend = self.backend if kind == self.backend.kind else BACKENDS[kind]()
            job = backend.attach(self.logs, ref)
            if job is None:
                lost += group
            else:
                self.jobs.append((job, group))
                self.total += 1
        return lost

    def wait(self, on_end: OnEnd | None = None) -> list[JobOutcome]:
        """Wait for every job submitted or attached so far, as they end (in order where the backend
        runs them when waited on). `on_end(outcome, n ended, total)` after each; a job's failure is
        its outcome's error, never an exception here. Returns the outcomes in the order they ended."""
        waiting, self.jobs = self.jobs, []
        runs = {id(job): dirs for job, dirs in waiting}
        return [self._ended(job, runs[id(job)], on_end, gone) for job, gone in self._as_ended([j for j, _ in waiting])]

    def _as_ended(self, jobs: Sequence[Job[Any]]) -> Iterator[tuple[Job[Any], bool]]:
        """(job, forgotten by the scheduler) as each ends: submitit's done(), or the backend's gone()."""
        if self.backend.waits_in_order:
            yield from ((job, False) for job in jobs)
            return
        pending = list(jobs)
        while pending:
            ended, still = [], []
            for job in pending:
                if job.done():
                    ended.append((job, False))
                elif self.backend.gone(job):
                    ended.append((job, True))
                else:
                    still.append(job)
            pending = still
            yield from ended
            if pending and not ended:
                time.sleep(self.backend.poll_s)

    def _report_ended(self, on_end: OnEnd | None) -> None:
        """Report the jobs that have ended already (while later ones wait for a slot)."""
        if self.backend.waits_in_order:
            return
        running, ended = [], []
        for pair in self.jobs:
            (ended if pair[0].done() else running).append(pair)
        self.jobs = running
        for job, dirs in ended:
            self._ended(job, dirs, on_end)

    def _ended(self, job: Job[Any], run_dirs: list[Path], on_end: OnEnd | None, gone: bool = False) -> JobOutcome:
        outcome = wait_job(job, run_dirs, gone)
        for run_dir in outcome.run_dirs:
            note_outcome(run_dir, outcome)
        self.ended += 1
        if on_end is not None:
            on_end(outcome, self.ended, self.total)
        return outcome


def wait_job(job: Job[Any], run_dirs: Sequence[Path], gone: bool = False) -> JobOutcome:
    """Wait for one job. Its error is the one its runs recorded (error.json); only when they recorded
    none, how the job ended: no output and the scheduler's state, or the exception's type and first line.
    `gone`: the scheduler has forgotten the job (Backend.gone): it has no result to wait for."""
    try:
        if gone:
            raise UncompletedJobError(f"job {job.job_id} is unknown to the scheduler")
        return JobOutcome(str(job.job_id), tuple(run_dirs), job.result())
    except Exception as e:  # FailedJobError (raised in the job), UncompletedJobError (killed...), or
        # the body's own exception on the debug executor
        own = [error_line(err) for d in run_dirs if (err := submission_error(d)) is not None]
        if own:
            why = own[0]
        elif isinstance(e, UncompletedJobError):
            why = f"has not produced any output (state: {_state(job)})"
        else:
            head = str(e).strip().splitlines()
            why = f"{type(e).__name__}: {head[0] if head else ''}".rstrip(": ")
        return JobOutcome(str(job.job_id), tuple(run_dirs), error=why)


def _state(job: Job[Any]) -> str:
    try:
        return str(job.state)
    except Exception as e:  # a state is for the message only
        return f"unknown: {type(e).__name__}"


def note_outcome(run_dir: str | os.PathLike, outcome: JobOutcome) -> None:
    """When a run's job has ended and the run has neither a result nor an error of this submission,
    write an error.json saying how the job ended, so the run folder alone tells why."""
    run_dir = Path(run_dir)
    if read_result(run_dir) is None and submission_error(run_dir) is None:
        why = f"job {outcome.job_id}: {outcome.error}" if outcome.error else f"job {outcome.job_id} ended without a result"
        write_error(run_dir, message=why, kind=JOB_ENDED)


def scheduler_states(run_dirs: Sequence[str | os.PathLike]) -> dict[str, JobState]:
    """{job id: scheduler state} of the last job of each run folder (its submission.json): one batched
    query per backend. Feed it to `core.runs.run_state`."""
    ids: dict[str, list[JobRef]] = {}
    for run_dir in run_dirs:
        sub = read_submission(Path(run_dir))
        if sub:
            ids.setdefault(str(sub["executor"]), []).append(JobRef.from_submission(sub))
    out: dict[str, JobState] = {}
    for kind, job_ids in ids.items():
        if kind not in BACKENDS:
            logger.warning("%d run(s) name executor %r, which is not one of %s: taken as unknown to the scheduler",
                           len(job_ids), kind, ", ".join(BACKENDS))
            continue
        out.update(BACKENDS[kind]().states(job_ids))
    return out
