"""In-process: each job runs inside the launcher, one at a time, when waited on (tests, debugging)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import submitit
from submitit.core.core import Job
from submitit.local.debug import DebugJob

from core.runs import JobRef, JobState

from ..resources import Resources
from .base import Backend


class InProcessJob(DebugJob):
    """A DebugJob that runs its function once, in the launcher's process, when waited on.

    Unlike submitit's, a failure is raised as is (and again on later calls) instead of opening pdb,
    unless stdin is a terminal: tests and pipelines never block on a debugger prompt."""

    def results(self) -> list[Any]:
        if sys.stdin is not None and sys.stdin.isatty():
            return super().results()
        self._check_not_cancelled()
        error = self.__dict__.get("_error")
        if error is not None:
            raise error
        if self._submission.done():
            return [self._submission._result]
        backup = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.environ)
        try:
            return [self._submission.result()]
        except Exception as e:
            self._error = e
            raise
        finally:
            os.environ.clear()
            os.environ.update(backup)

    def exception(self) -> BaseException | None:  # type: ignore[override]
        try:
            self.results()
        except Exception as e:
            return e
        return None


class InProcessExecutor(submitit.DebugExecutor):
    """submitit's DebugExecutor (jobs run in-process, one at a time, when waited on), with `env`
    set while each job runs."""

    job_class = InProcessJob

    def __init__(self, folder: str | os.PathLike, env: Mapping[str, str] | None = None) -> None:
        super().__init__(folder)
        self.env = dict(env or {})

    def _internal_process_submissions(self, delayed_submissions: list[Any]) -> list[Job[Any]]:
        jobs = []
        for ds in delayed_submissions:
            job = InProcessJob(self.folder, ds)
            job.environ.update(self.env)
            jobs.append(job)
        return jobs


class DebugBackend(Backend):
    """Jobs run in the launcher's process when waited on, in submission order. The scheduler knows
    none of them, nothing re-attaches (the launcher that ran them is gone) and nothing needs cancelling."""

    kind = "debug"
    waits_in_order = True
    writes_logs = False
    detaches = False

    def executor(self, folder: str | os.PathLike, resources: Resources, *, env: Mapping[str, str] | None = None,
                 name: str = "crowding") -> submitit.Executor:
        """`env` is set only while each job runs; `resources` and `name` do not apply."""
        return InProcessExecutor(Path(folder), env={k: str(v) for k, v in (env or {}).items()})

    def states(self, jobs: Sequence[JobRef | str]) -> dict[str, JobState]:
        return {}
