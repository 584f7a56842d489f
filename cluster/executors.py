"""Executors by name (auto|slurm|local|debug): a configured submitit executor for one stage's jobs."""

from __future__ import annotations

import logging
import os
import re
import select
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import submitit
from submitit.core.core import Job
from submitit.local.debug import DebugJob

from .resources import LocalCapacity, Resources, local_capacity, local_slots
from .scheduler import cancel_local, interrupt_local

logger = logging.getLogger(__name__)

KINDS = ("auto", "slurm", "local", "debug")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def slurm_available(timeout_s: float = 10.0) -> bool:
    """True when a SLURM controller answers `scontrol ping` (`srun` on PATH is not enough)."""
    if shutil.which("scontrol") is None:
        return False
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "UP" in out.stdout


def resolve_kind(kind: str) -> str:
    """`auto` -> slurm when a controller answers, else local; other names are checked and returned."""
    if kind not in KINDS:
        raise ValueError(f"executor {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "auto":
        return "slurm" if slurm_available() else "local"
    return kind


def executor_kind(executor: submitit.Executor) -> str:
    """The name (slurm|local|debug) of an executor made by `make_executor`, as recorded in submission.json."""
    for cls, name in ((submitit.SlurmExecutor, "slurm"), (submitit.LocalExecutor, "local"),
                      (submitit.DebugExecutor, "debug")):
        if isinstance(executor, cls):
            return name
    raise TypeError(f"unknown executor type {type(executor).__name__}; expected one made by make_executor")


def _setup_lines(env: Mapping[str, str]) -> list[str]:
    for key in env:
        if not _ENV_NAME.match(key):
            raise ValueError(f"environment variable name {key!r} is not valid (letters, digits, _; "
                             "not starting with a digit)")
    return [f"export {key}={shlex.quote(str(value))}" for key, value in env.items()]


def _job_env(resources: Resources, env: Mapping[str, str] | None) -> dict[str, str]:
    """The caller's variables, plus thread counts that match the job's cpus unless already set
    (several local jobs would otherwise each start one thread per core of the machine)."""
    out = {}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if name not in os.environ:
            out[name] = str(resources.cpus)
    out.update({k: str(v) for k, v in (env or {}).items()})
    return out


def make_executor(kind: str, folder: str | os.PathLike, resources: Resources, *,
                  env: Mapping[str, str] | None = None, name: str = "crowding",
                  max_local_jobs: int | None = None,
                  capacity: LocalCapacity | None = None) -> submitit.Executor:
    """An executor for one stage's jobs, their submitit files and logs in `folder`.

    `env`: variables set before Python starts in the job (allocator settings...); the debug
    executor sets them only while the job runs. `name`: the SLURM job name (sacct --name).
    `max_local_jobs` / `capacity`: override the local executor's concurrency / machine size."""
    kind = resolve_kind(kind)
    folder = Path(folder)
    job_env = _job_env(resources, env)
    if kind == "slurm":
        if not slurm_available():
            raise RuntimeError("executor 'slurm' was asked for, but no SLURM controller answers "
                               "`scontrol ping`; use --executor local (or auto)")
        ex = submitit.SlurmExecutor(folder)
        params: dict[str, Any] = dict(
            job_name=name, time=resources.time_min, cpus_per_task=resources.cpus,
            array_parallelism=resources.array_parallelism, signal_delay_s=resources.signal_delay,
            setup=_setup_lines(job_env))
        if resources.partition is not None:
            params["partition"] = resources.partition
        if resources.gpus:
            params["gpus_per_node"] = resources.gpus
        if resources.mem_gb is not None:
            params["mem"] = f"{max(1, round(resources.mem_gb * 1024))}M"
        if resources.extra_sbatch:
            params["additional_parameters"] = resources.sbatch_options()
        ex.update_parameters(**params)
        return ex
    if kind == "local":
        cap = local_capacity() if capacity is None else capacity
        if resources.gpus and cap.gpus and resources.gpus > len(cap.gpus):
            raise ValueError(f"gpus {resources.gpus} per job, but this machine shows {len(cap.gpus)} "
                             f"GPU(s) {list(cap.gpus)}; ask for at most {len(cap.gpus)}")
        if resources.gpus and not cap.gpus:
            logger.warning("jobs ask for %d GPU(s) but this machine shows none: running them without",
                           resources.gpus)
        slots = local_slots(resources, cap) if max_local_jobs is None else max_local_jobs
        ex = BoundedLocalExecutor(folder, max_jobs=slots, gpus=cap.gpus if resources.gpus else ())
        ex.update_parameters(timeout_min=resources.time_min, signal_delay_s=resources.signal_delay,
                             gpus_per_node=resources.gpus if cap.gpus else 0,
                             setup=_setup_lines(job_env))
        return ex
    return InProcessExecutor(folder, env={k: str(v) for k, v in (env or {}).items()})


# ----------------------------------------------------------------------- local


def wait_for_any_exit(pids: Sequence[int]) -> None:
    """Block until one of these processes has exited (without reaping it): pidfds + poll."""
    fds = []
    try:
        for pid in pids:
            try:
                fds.append(os.pidfd_open(pid))
            except ProcessLookupError:
                return  # already gone (and reaped)
        if fds:
            poller = select.poll()  # not select.select: fd numbers may exceed FD_SETSIZE
            for fd in fds:
                poller.register(fd, select.POLLIN)
            poller.poll()
    finally:
        for fd in fds:
            os.close(fd)


class BoundedLocalJob(submitit.LocalJob):
    """A LocalJob whose cancel() and _interrupt() reach the controller and its tasks even when a
    shell runs the setup lines."""

    def cancel(self, check: bool = True) -> None:
        if self._process is not None and self._process.poll() is None:
            cancel_local(self.job_id)

    def _interrupt(self) -> None:
        """Preemption / time limit, as on SLURM: SIGUSR2 to the job's tasks (see scheduler.interrupt_local)."""
        if self._process is not None and self._process.poll() is None:
            interrupt_local(self.job_id)


class BoundedLocalExecutor(submitit.LocalExecutor):
    """submitit's LocalExecutor that runs at most `max_jobs` jobs at once.

    A submission blocks until one of this executor's jobs has ended (so `map_array` of 100 jobs returns
    when the last one has started). Each job gets its own GPUs out of `gpus` (device ids)."""

    job_class = BoundedLocalJob

    def __init__(self, folder: str | os.PathLike, max_jobs: int, gpus: Sequence[int] = (),
                 **kwargs: Any) -> None:
        super().__init__(folder, **kwargs)
        if isinstance(max_jobs, bool) or not isinstance(max_jobs, int) or max_jobs < 1:
            raise ValueError(f"max_jobs {max_jobs!r} must be an integer >= 1")
        self.max_jobs = max_jobs
        self.gpus = tuple(gpus)
        self._running: list[tuple[subprocess.Popen, tuple[int, ...]]] = []

    def _reap(self) -> None:
        self._running = [(p, g) for p, g in self._running if p.poll() is None]

    def running(self) -> int:
        """Jobs of this executor still running."""
        self._reap()
        return len(self._running)

    def _wait_for_slot(self) -> None:
        self._reap()
        while len(self._running) >= self.max_jobs:
            logger.debug("%d local jobs running (max %d): waiting for one to end", len(self._running),
                         self.max_jobs)
            wait_for_any_exit([p.pid for p, _ in self._running])
            self._reap()

    def _submit_command(self, command: str) -> BoundedLocalJob:
        self._wait_for_slot()
        n_gpus = self.parameters.get("gpus_per_node", 0)
        devices: tuple[int, ...] = ()
        if n_gpus and self.gpus:
            used = {d for _, g in self._running for d in g}
            devices = tuple(d for d in self.gpus if d not in used)[:n_gpus]
            if len(devices) < n_gpus:  # max_jobs was set above what the GPUs allow: share them
                devices = self.gpus[:n_gpus]
            self.parameters["visible_gpus"] = devices
        started = super()._submit_command(command)
        assert started._process is not None
        self._running.append((started._process, devices))
        return BoundedLocalJob(folder=self.folder, job_id=started.job_id, process=started._process,
                               tasks=list(range(started.num_tasks)))


# ----------------------------------------------------------------------- debug


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
