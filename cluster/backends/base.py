"""What a scheduler backend must say: the `Backend` interface, and the job environment every kind sets."""

from __future__ import annotations

import contextlib
import os
import re
import runpy
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import submitit
from submitit.core.core import Job

from core.runs import JobRef, JobState

from ..resources import Resources

Guard = Callable[[], contextlib.AbstractContextManager[Any]]


@dataclass(frozen=True)
class Started:
    """A process started as a job of its own (`Backend.start`): how to find it, and its log files."""

    ref: JobRef
    log: Path
    err: Path | None = None  # None where stderr goes to `log`


class ModuleJob(submitit.helpers.Checkpointable):
    """`python -m MODULE ARGS` in `cwd`, run inside a scheduler job (in the job's own Python, as
    runpy does). Checkpointable: on its time limit or a preemption, submitit requeues it unchanged.
    An exit status outside `ok` fails the job."""

    def __init__(self, module: str, args: Sequence[str], cwd: str, ok: Sequence[int] = (0,)) -> None:
        self.module, self.args, self.cwd, self.ok = module, list(args), cwd, tuple(ok)

    def __call__(self) -> int:
        os.chdir(self.cwd)
        argv, sys.argv = sys.argv, [self.module, *self.args]
        try:
            runpy.run_module(self.module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.argv = argv
        if code not in self.ok:
            raise RuntimeError(f"python -m {self.module} {' '.join(self.args)} exited with status {code}")
        return code

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Backend:
    """One kind of executor (slurm, local, debug): everything that differs between them.

    A backend makes the submitit executor of a stage, submits its jobs, asks the scheduler for the
    states of jobs (one batched query), re-attaches to a job of an earlier launcher, lists every job
    it still holds whose files are in a folder (what --cancel must leave empty), and cancels jobs.
    Jobs are named by `JobRef`s (core.runs: the id, the executor's folder, and a token where ids are
    reused); a bare job id is accepted wherever a JobRef is. cluster.submission drives them all through this interface; a new scheduler
    is one module in cluster/backends/ and one line in the registry (cluster/backends/__init__.py)."""

    kind: ClassVar[str]                     # as recorded in submission.json
    poll_s: ClassVar[float] = 1.0           # how often waiting asks whether a job has ended
    waits_in_order: ClassVar[bool] = False  # jobs run when waited on (in-process): wait in submission order
    shares_cpus: ClassVar[bool] = False     # jobs share this machine's cores with the launcher and each other
    writes_logs: ClassVar[bool] = True      # jobs write submitit's stdout/stderr files in the logs folder
    unit_name: ClassVar[str] = "job"        # what one cancel call names, for messages
    detaches: ClassVar[bool] = True         # can start a job of its own (`start`: the --detach driver)

    @classmethod
    def available(cls) -> bool:
        """Whether jobs can be submitted from here (`auto` takes the first available backend)."""
        return True

    def executor(self, folder: str | os.PathLike, resources: Resources, *, env: Mapping[str, str] | None = None,
                 name: str = "crowding") -> submitit.Executor:
        """The configured submitit executor of one stage, its files and logs in `folder`.

        `env`: variables set before Python starts in the job; `name`: the scheduler's job name."""
        raise NotImplementedError

    def submit(self, executor: submitit.Executor, calls: Sequence[Callable[[], Any]],
               on_submit: Callable[[int, Job[Any]], None], guard: Guard = contextlib.nullcontext,
               on_wait: Callable[[], None] = lambda: None) -> list[Job[Any]]:
        """Submit argument-less callables, in order; `on_submit(i, job)` as soon as job i has an id,
        inside `guard()` with the scheduler call (the guard may refuse: cancelled). By default one
        by one; `on_wait()` after each submission (a bounded executor reports ended jobs there)."""
        jobs = []
        for i, call in enumerate(calls):
            with guard():
                job = executor.submit(call)
                jobs.append(job)
                on_submit(i, job)
            on_wait()
        return jobs

    def ref(self, job: Job[Any], folder: str | os.PathLike) -> JobRef:
        """What submission.json records of a job just submitted (see JobRef)."""
        return JobRef(str(job.job_id), str(Path(folder).absolute()))

    def queue_ref(self) -> JobRef | None:
        """What a run waiting in this launcher for a free slot records, where jobs wait there (local);
        None where the scheduler queues them."""
        return None

    def states(self, jobs: Sequence[JobRef | str]) -> dict[str, JobState]:
        """{job id: its JobState (core.runs: our five states, and the scheduler's own name)} for the
        jobs the scheduler still knows, from one batched query. Feed it to `core.runs.run_state`."""
        raise NotImplementedError

    def attach(self, folder: str | os.PathLike, job: JobRef | str) -> Job[Any] | None:
        """A Job for one submitted earlier (by a launcher that has since restarted), from the executor's
        folder and the recorded reference; None when there is nothing to wait for (resubmit the run)."""
        return None

    def start(self, module: str, args: Sequence[str], *, folder: str | os.PathLike, resources: Resources,
              cwd: str, name: str = "crowding", ok: Sequence[int] = (0,)) -> Started:
        """Run `python -m MODULE ARGS` in `cwd` as a job of its own (a launcher's --detach driver), its
        files and logs in `folder`; `ok`: the exit statuses that are not a failure."""
        raise ValueError(f"the {self.kind} executor cannot start a job of its own (use slurm or local)")

    def current(self, job: JobRef) -> bool:
        """True inside that job (this process is the job, or runs in it)."""
        return False

    def gone(self, job: Job[Any]) -> bool:
        """True when the scheduler has forgotten a job that has not ended as submitit sees it: it never
        will, so it counts as ended without output (asked while waiting, after `job.done()`)."""
        return False

    def queued(self, folder: str | os.PathLike) -> list[JobRef]:
        """Every job the scheduler still holds (queued or running) whose files are in `folder` or below,
        as the scheduler sees it (a job whose submission.json was never written included)."""
        return []

    def cancel_unit(self, job_id: str) -> str:
        """What one cancel call names for this job (SLURM: its array)."""
        return job_id

    def cancel_command(self, units: Sequence[str]) -> str:
        """The shell command that cancels these units, for a user to type ("" when there is none)."""
        return ""

    def cancel(self, jobs: Sequence[JobRef | str], wait_s: float) -> list[str]:
        """Cancel these jobs and wait (at most `wait_s`) until they are gone; returns problems, one per line."""
        return []

    def describe(self, resources: Resources) -> str:
        """How a stage's submission is described in the launcher's log line."""
        return self.kind


def thread_env(resources: Resources, env: Mapping[str, str] | None) -> dict[str, str]:
    """The caller's variables, plus thread counts that match the job's cpus unless already set
    (several local jobs would otherwise each start one thread per core of the machine)."""
    out = {}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if name not in os.environ:
            out[name] = str(resources.cpus)
    out.update({k: str(v) for k, v in (env or {}).items()})
    return out


def setup_lines(env: Mapping[str, str]) -> list[str]:
    """`export NAME=value` lines that a job's shell runs before Python starts."""
    for key in env:
        if not _ENV_NAME.match(key):
            raise ValueError(f"environment variable name {key!r} is not valid (letters, digits, _; "
                             "not starting with a digit)")
    return [f"export {key}={shlex.quote(str(value))}" for key, value in env.items()]
