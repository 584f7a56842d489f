"""Job bodies as submitted: run folders locked while worked on, errors and attempts recorded there.

`RunJob(run_dir, fn, *args, **kwargs)` runs `fn(*args, **kwargs)` in the job process for one run folder:
  - holds `<run_dir>/run.lock`, so two copies of a run (a relaunch while the old job still runs) never
    work at once: the second waits, finds the first's result and returns it without running `fn`;
  - the result is what `fn` wrote to result.json, or else the mapping it returned (then written here);
  - when `fn` raises, writes error.json and re-raises, so submitit records the failure too;
  - counts attempts in attempts.json: a scheduler job that starts more than `max_attempts` times on
    the same run (requeued again and again) ends as failed, saying why.
`CheckpointableRunJob` is the same for training: on SIGUSR2 (time limit, preemption) submitit calls its
`checkpoint()`, which requeues it unchanged; the body resumes from the run folder's own checkpoint.
`ChunkJob(fn, *args, run_dirs=[...])` runs a body that fills several run folders itself (one model,
many conditions), taking each run's lock itself; a crash of the whole chunk is written to the runs it
left without a result.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from filelock import FileLock

from core.atomic import CorruptFileError, atomic_write_json, read_json
from core.layout import ATTEMPTS, LOCK, RESULT
from core.runs import (
    error_line,
    error_since,
    read_result,
    result_problem,
    write_error,
    write_result,
)

logger = logging.getLogger(__name__)


class TooManyAttemptsError(RuntimeError):
    """The same scheduler job started (or asked to be requeued) more often than allowed."""


@dataclass(frozen=True)
class RunResult:
    """What a RunJob hands back to the launcher (the full result is in the run folder too)."""

    run_dir: str
    result: dict[str, Any]
    attempt: int          # this job's attempt number on the run (1 = first start); 0 when reused
    reused: bool = False  # True when the result was already there (another copy produced it)


def current_job_id() -> str:
    """The scheduler's id for this process's job ("123_4" for an array task), or pid-<pid> outside one.

    A debug job's id is an object address, which another launcher process may well reuse: the pid is
    added so that separate launches never count as starts of one job."""
    try:
        job_id = str(submitit.JobEnvironment().job_id)
    except RuntimeError:
        return f"pid-{os.getpid()}"
    return f"{job_id}-pid{os.getpid()}" if job_id.startswith("DEBUG_") else job_id


# ------------------------------------------------------------------ attempts.json


def read_attempts(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    try:
        data = read_json(Path(run_dir) / ATTEMPTS)
    except CorruptFileError as e:
        logger.warning("ignoring %s", e)
        return []
    return list(data.get("attempts", [])) if data else []


def attempts_of(run_dir: str | os.PathLike, job_id: str) -> int:
    """How many times the scheduler job `job_id` has started working on this run."""
    return sum(a.get("job_id") == job_id for a in read_attempts(run_dir))


def start_attempt(run_dir: Path, max_attempts: int, *, exclusive: bool = False) -> int:
    """Record that this job starts on the run; past `max_attempts` starts of the same job, write
    error.json and raise TooManyAttemptsError instead.

    An earlier start still marked running never recorded its end: it was killed (SIGKILL, scancel,
    node lost, a requeue by the scheduler). It is marked `lost` when it is certainly dead: a start of
    this same job (a scheduler runs one copy of a job id at a time), or any start when the caller
    holds the run lock (`exclusive`: a live start would hold it)."""
    job_id = current_job_id()
    attempts = read_attempts(run_dir)
    mine = [a for a in attempts if a.get("job_id") == job_id]
    for a in attempts:
        if a.get("outcome") == "running" and (exclusive or a.get("job_id") == job_id):
            a.update(outcome="lost", error="ended without recording how (killed, or requeued by the scheduler)")
    n = len(mine) + 1
    if n > max_attempts:
        why = mine[-1].get("error") or mine[-1].get("outcome") or "unknown"
        error = TooManyAttemptsError(f"job {job_id} started {n} times (max_attempts {max_attempts}); "
                                     f"last attempt ended: {why}")
        write_error(run_dir, error)
        raise error
    attempts.append({"job_id": job_id, "attempt": n, "host": socket.gethostname(), "pid": os.getpid(),
                     "start": time.time(), "end": None, "outcome": "running", "error": ""})
    atomic_write_json(run_dir / ATTEMPTS, {"attempts": attempts})
    return n


def end_attempt(run_dir: Path, attempt: int, outcome: str, error: str = "") -> None:
    job_id = current_job_id()
    attempts = read_attempts(run_dir)
    for a in reversed(attempts):
        if a.get("job_id") == job_id and a.get("attempt") == attempt:
            a.update(end=time.time(), outcome=outcome, error=error)
            break
    atomic_write_json(run_dir / ATTEMPTS, {"attempts": attempts})


def _line(e: BaseException) -> str:
    return error_line({"type": type(e).__name__, "message": str(e)})


# ------------------------------------------------------------------ job bodies


class RunJob:
    """Run `fn(*args, **kwargs)` for the run folder `run_dir` (see the module docstring).

    `fn` and its arguments must pickle (module-level functions, dataclasses). Keyword-only options
    (not passed to `fn`): `max_attempts` starts of one scheduler job. Whether result.json counts is
    core.runs' one rule (`read_result`)."""

    def __init__(self, run_dir: str | os.PathLike, fn: Callable[..., Any], *args: Any, max_attempts: int = 3,
                 **kwargs: Any) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts {max_attempts} must be >= 1")
        self.run_dir = Path(run_dir)
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.max_attempts = max_attempts

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.run_dir)!r}, {getattr(self.fn, '__qualname__', self.fn)})"

    def __call__(self) -> RunResult:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(self.run_dir / LOCK):
            done = read_result(self.run_dir)
            if done is not None:
                logger.info("%s already has a result: not running it again", self.run_dir)
                return RunResult(str(self.run_dir), done, attempt=0, reused=True)
            attempt = start_attempt(self.run_dir, self.max_attempts, exclusive=True)
            try:
                returned = self.fn(*self.args, **self.kwargs)
                result = read_result(self.run_dir)
                if result is None:
                    if not isinstance(returned, Mapping):
                        raise TypeError(f"{getattr(self.fn, '__name__', self.fn)} neither wrote "
                                        f"{self.run_dir / RESULT} nor returned a mapping "
                                        f"(it returned {type(returned).__name__})")
                    write_result(self.run_dir, returned)
                    result = read_result(self.run_dir)
                    if result is None:
                        raise ValueError(f"the result of {self.run_dir} does not count: {result_problem(self.run_dir)}")
            except Exception as e:
                write_error(self.run_dir, e)
                end_attempt(self.run_dir, attempt, "failed", _line(e))
                raise
            except BaseException as e:  # requeue (SystemExit), interrupt: not a failure of the run
                end_attempt(self.run_dir, attempt, "interrupted", type(e).__name__)
                raise
            end_attempt(self.run_dir, attempt, "done")
            return RunResult(str(self.run_dir), result, attempt=attempt)


class CheckpointableRunJob(RunJob, submitit.helpers.Checkpointable):
    """A RunJob that submitit requeues on SIGUSR2 (time limit, preemption) instead of failing it.

    The body saves its own checkpoint in the run folder and resumes from it; `checkpoint()` only
    hands submitit this same call to run again, or refuses once the attempts are used up."""

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        n = attempts_of(self.run_dir, current_job_id())
        if n >= self.max_attempts:
            # Raised inside the body (submitit calls this from its signal handler): the run fails here,
            # and error.json says why, instead of a requeue that would be refused at its start.
            raise TooManyAttemptsError(f"not requeuing {self.run_dir.name}: job {current_job_id()} already "
                                       f"started {n} times (max_attempts {self.max_attempts})")
        logger.info("requeuing %s (attempt %d of %d)", self.run_dir, n + 1, self.max_attempts)
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class ChunkJob:
    """Run `fn(*args, **kwargs)`, a body that fills the folders `run_dirs` itself (taking each run's
    lock, writing each result or error). This wrapper counts attempts in those folders and, when the
    whole body raises (e.g. the model does not load), writes the error to each run it left without a
    result or an error of this attempt, then re-raises."""

    def __init__(self, fn: Callable[..., Any], *args: Any, run_dirs: Sequence[str | os.PathLike] = (),
                 max_attempts: int = 3, **kwargs: Any) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.run_dirs = [Path(d) for d in run_dirs]
        self.max_attempts = max_attempts

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(self.fn, '__qualname__', self.fn)}, {len(self.run_dirs)} runs)"

    def __call__(self) -> Any:
        start = time.time()
        started: list[tuple[Path, int]] = []
        for run_dir in self.run_dirs:
            run_dir.mkdir(parents=True, exist_ok=True)
            if read_result(run_dir) is None:  # outside the run lock: a bound, not an exact ledger
                started.append((run_dir, start_attempt(run_dir, self.max_attempts)))
        try:
            out = self.fn(*self.args, **self.kwargs)
        except Exception as e:
            for run_dir, attempt in started:
                if read_result(run_dir) is not None:  # this condition finished before the chunk failed
                    end_attempt(run_dir, attempt, "done")
                    continue
                if error_since(run_dir, start) is None:  # not one the body wrote itself
                    write_error(run_dir, e)
                end_attempt(run_dir, attempt, "failed", _line(e))
            raise
        except BaseException as e:
            for run_dir, attempt in started:
                end_attempt(run_dir, attempt, "interrupted", type(e).__name__)
            raise
        for run_dir, attempt in started:
            end_attempt(run_dir, attempt, "done")
        return out
