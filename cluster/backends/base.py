"""What a scheduler backend must say: the `Backend` interface, and the job environment every kind sets."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import submitit
from submitit.core.core import Job

from ..resources import Resources

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Backend:
    """One kind of executor (slurm, local, debug): everything that differs between them.

    A backend makes the submitit executor of a stage, submits its jobs, asks the scheduler for the
    states of job ids (one batched query), re-attaches to a job of an earlier launcher by its id,
    and cancels jobs. cluster.submission drives them all through this interface; a new scheduler
    is one module in cluster/backends/ and one line in the registry (cluster/backends/__init__.py)."""

    kind: ClassVar[str]                     # as recorded in submission.json
    poll_s: ClassVar[float] = 1.0           # how often waiting asks whether a job has ended
    waits_in_order: ClassVar[bool] = False  # jobs run when waited on (in-process): wait in submission order
    shares_cpus: ClassVar[bool] = False     # jobs share this machine's cores with the launcher and each other
    writes_logs: ClassVar[bool] = True      # jobs write submitit's stdout/stderr files in the logs folder
    unit_name: ClassVar[str] = "job"        # what one cancel call names, for messages

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
               on_submit: Callable[[int, Job[Any]], None]) -> list[Job[Any]]:
        """Submit argument-less callables, in order; `on_submit(i, job)` as soon as job i has an id.
        By default one by one (a bounded executor blocks until a slot is free)."""
        jobs = []
        for i, call in enumerate(calls):
            job = executor.submit(call)
            jobs.append(job)
            on_submit(i, job)
        return jobs

    def states(self, job_ids: Sequence[str]) -> dict[str, str]:
        """{job id: state, in sacct's names (RUNNING, PENDING, COMPLETED, CANCELLED...)} for the jobs the
        scheduler still knows, from one batched query. Feed it to `core.runs.run_state`."""
        raise NotImplementedError

    def attach(self, folder: str | os.PathLike, job_id: str) -> Job[Any] | None:
        """A Job for one submitted earlier (by a launcher that has since restarted), from the executor's
        folder and the recorded id; None when there is nothing to wait for (resubmit the run)."""
        return None

    def cancel_unit(self, job_id: str) -> str:
        """What one cancel call names for this job (SLURM: its array)."""
        return job_id

    def cancel_command(self, units: Sequence[str]) -> str:
        """The shell command that cancels these units, for a user to type ("" when there is none)."""
        return ""

    def cancel(self, units: Sequence[str], wait_s: float) -> list[str]:
        """Cancel these units and wait (at most `wait_s`) until they are gone; returns problems, one per line."""
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
