"""Submitting a stage's jobs as job arrays (chunked by MaxArraySize) and waiting for them.

On SLURM a stage is one array job (several when it exceeds MaxArraySize: equal chunks, each with an
equal share of `array_parallelism`, so the stage never runs more than that many tasks at once). The
local executor starts the jobs one by one as slots free up; the debug executor runs them in-process
when waited on. The same calls work everywhere."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import submitit
from submitit.core.core import Job

from core.runs import (
    RunState,
    read_error,
    read_result,
    read_submission,
    record_submission,
    run_state,
    write_error,
)

from .executors import executor_kind
from .jobs import RunJob
from .scheduler import attach, max_array_size, scheduler_states, with_gone_check

__all__ = ["JobOutcome", "attach", "chunk_sizes", "scheduler_states", "submit_array", "submit_runs",
           "wait_job", "wait_runs"]

logger = logging.getLogger(__name__)

R = TypeVar("R")


def chunk_sizes(n: int, max_size: int) -> list[int]:
    """Sizes of the fewest, most equal chunks of n items, none over max_size: (2500, 1001) -> [834, 833, 833]."""
    if n <= 0:
        return []
    k = math.ceil(n / max_size)
    return [n // k + (i < n % k) for i in range(k)]


def submit_array(executor: submitit.Executor, calls: Sequence[Callable[[], R]], *,
                 max_size: int | None = None,
                 on_submit: Callable[[int, Job[R]], None] | None = None) -> list[Job[R]]:
    """Submit argument-less callables (RunJob, ChunkJob...) as one job array per chunk; jobs in call order.

    `max_size`: largest array (default: the cluster's MaxArraySize). `on_submit(i, job)` is called as
    soon as job i has an id (per chunk on SLURM; per job on the local executor, whose submission blocks
    until a slot is free)."""
    if not calls:
        return []
    kind = executor_kind(executor)
    jobs: list[Job[R]] = []
    if kind != "slurm":
        for i, call in enumerate(calls):
            job = executor.submit(call)
            jobs.append(job)
            if on_submit is not None:
                on_submit(i, job)
        return jobs
    sizes = chunk_sizes(len(calls), max_array_size() if max_size is None else max_size)
    parallelism = executor.parameters.get("array_parallelism", 256)
    share = max(1, parallelism // len(sizes))
    if len(sizes) > 1:
        logger.info("%d jobs as %d arrays of <= %d tasks, each running <= %d at once", len(calls),
                    len(sizes), max(sizes), share)
    executor.update_parameters(array_parallelism=share)
    try:
        start = 0
        for size in sizes:
            chunk = list(calls[start:start + size])
            new = [with_gone_check(job) for job in executor.submit_array(chunk)]
            for i, job in enumerate(new, start):
                if on_submit is not None:
                    on_submit(i, job)
            jobs += new
            start += size
    finally:
        executor.update_parameters(array_parallelism=parallelism)
    return jobs


def submit_runs(executor: submitit.Executor, calls: Sequence[RunJob], stage: str, *,
                max_size: int | None = None) -> list[Job[Any]]:
    """submit_array, recording each job in its run folder's submission.json (executor, job id, stage)."""
    kind = executor_kind(executor)

    def record(i: int, job: Job[Any]) -> None:
        record_submission(calls[i].run_dir, executor=kind, job_id=job.job_id, stage=stage)

    return submit_array(executor, calls, max_size=max_size, on_submit=record)


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    result: Any = None     # what the job returned (a RunResult for a RunJob)
    error: str = ""        # one line; empty when the job succeeded


def wait_job(job: Job[Any]) -> JobOutcome:
    """Wait for one job; a failure becomes the outcome's error, never an exception here."""
    try:
        return JobOutcome(str(job.job_id), job.result())
    except Exception as e:  # FailedJobError (raised in the job), UncompletedJobError (killed...), or
        # the body's own exception on the debug executor
        return JobOutcome(str(job.job_id), error=_summary(e))


def _summary(e: BaseException) -> str:
    """One line for a job's failure: the last line of its traceback, or the head of submitit's message."""
    text = str(e)
    if isinstance(e, submitit.core.utils.FailedJobError) and "\n----" in text:
        trace = text.split("----------------------\n")[1].strip().splitlines()
        return trace[-1] if trace else text.splitlines()[0]
    if isinstance(e, submitit.core.utils.UncompletedJobError):
        return " ".join(text.splitlines()[:2])
    return f"{type(e).__name__}: {text}".strip()


def wait_runs(jobs: Sequence[Job[Any]], run_dirs: Sequence[str | Path], *,
              on_done: Callable[[Path, RunState], None] | None = None) -> list[RunState]:
    """Wait for each run's job (in order) and return the runs' states (done or failed).

    A job that ended without writing result.json or error.json (cancelled, killed for memory or time,
    a crash before the body ran) gets an error.json here saying so, so the run folder alone tells why."""
    if len(jobs) != len(run_dirs):
        raise ValueError(f"{len(jobs)} jobs but {len(run_dirs)} run folders")
    states = []
    for job, run_dir in zip(jobs, run_dirs, strict=True):
        run_dir = Path(run_dir)
        outcome = wait_job(job)
        note_outcome(run_dir, outcome)
        state = run_state(run_dir)
        if state.state not in ("done", "failed"):  # e.g. the job returned without a result.json
            write_error(run_dir, message=f"job {outcome.job_id} ended without a result",
                        kind="JobEndedWithoutResult")
            state = run_state(run_dir)
        states.append(state)
        if on_done is not None:
            on_done(run_dir, state)
    return states


def note_outcome(run_dir: str | Path, outcome: JobOutcome) -> None:
    """When a run's job failed without leaving its own error.json (cancelled, killed, a crash before
    the body ran), write one saying how it ended, so the run folder alone tells why."""
    run_dir = Path(run_dir)
    if outcome.error and read_result(run_dir) is None and not _has_fresh_error(run_dir):
        write_error(run_dir, message=f"job {outcome.job_id}: {outcome.error}", kind="JobEndedWithoutResult")


def _has_fresh_error(run_dir: Path) -> bool:
    """An error.json written since the run's last submission (so it is about this job)."""
    error = read_error(run_dir)
    if error is None:
        return False
    sub = read_submission(run_dir)
    return sub is None or float(error.get("time", 0)) >= float(sub.get("time", 0))
