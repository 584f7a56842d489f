"""This machine: at most as many jobs at once as fit (`BoundedLocalExecutor`), each known by its
controller's pid, the pid's start time and the job folder in its command line (pids are reused);
states from /proc, re-attaching after a launcher restart, cancelling as scancel does."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import submitit
from submitit.core.core import Job

from core import procs
from core.runs import JobRef, JobState

from ..resources import LocalCapacity, Resources, local_capacity, local_slots
from .base import Backend, Guard, Started, setup_lines, thread_env

logger = logging.getLogger(__name__)

LOCAL_CONTROLLER = "submitit.local._local"  # in the command line of every local job's controller
QUEUED = "queued-"  # job id prefix of runs waiting in their launcher for a free slot: queued-<launcher pid>
CONTROLLER_LOG = "controllers.log"  # the controllers' own output (a cancelled one's KeyboardInterrupt)


# ------------------------------------------------------------------ processes of a local job


def local_controller_alive(pid: int | str, folder: str = "", token: str = "") -> bool:
    """True when `pid` is a live submitit local controller (or the shell that runs one), started at
    `token` (its start time, when recorded) for the job folder `folder` (when recorded): a pid reused
    by another experiment's job, or by anything else, is not taken for it."""
    return procs.alive(pid, token=token, contains=(LOCAL_CONTROLLER, *([folder] if folder else [])))


def local_job_alive(job: JobRef | str) -> bool:
    """Whether a local job is alive: a run waiting for a slot (queued-<launcher pid>) while its launcher
    lives; a controller (recorded with its folder) by pid, start time and folder; a process started by
    `LocalBackend.start` (a token, no folder) by pid and start time; a bare pid, as older records
    have it, when it is a controller."""
    ref = JobRef.of(job)
    if ref.job_id.startswith(QUEUED):
        return bool(ref.token) and procs.alive(ref.job_id[len(QUEUED):], token=ref.token)
    if ref.token and not ref.folder:
        return procs.alive(ref.job_id, token=ref.token)
    return local_controller_alive(ref.job_id, ref.folder, ref.token)


def local_controller_pids(pid: int | str) -> list[int]:
    """The controller process(es) of a local job: the pid itself, or, when submitit started the job
    through a shell (for its setup lines), the shell's children."""
    pid = int(pid)
    try:
        own = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []
    if any(part.endswith(LOCAL_CONTROLLER.encode()) for part in own[:4]):
        return [pid]
    return procs.children(pid)


def local_task_pids(pid: int | str) -> list[int]:
    """The task processes of a local job (its controller's children): the Python that runs the job body."""
    return [task for controller in local_controller_pids(pid) for task in procs.children(controller)]


def interrupt_local(pid: int | str) -> list[int]:
    """Preempt a local job as its time limit does: SIGUSR2 to its tasks, whose submitit handler
    checkpoints and asks the controller to requeue them. (submitit's LocalJob._interrupt signals the
    controller, or the shell that wraps it, instead: neither handles SIGUSR2, so it dies and leaves
    the task running unsupervised.) Returns the pids signalled."""
    if not local_controller_alive(pid):
        return []
    tasks = local_task_pids(pid)
    for task in tasks:
        with contextlib.suppress(ProcessLookupError):
            os.kill(task, signal.SIGUSR2)
    return tasks


def cancel_local_jobs(pids: Iterable[int | str], grace_s: float = 5.0) -> None:
    """Cancel local jobs as `scancel` does: ask, then kill. SIGINT to each controller (which then
    stops its tasks); signalling the wrapping shell alone would do nothing, as a non-interactive
    shell waits for its child first. A controller still alive after `grace_s` seconds (one grace
    period for all) gets its tasks, itself and its shell SIGKILLed: it may never see the SIGINT,
    because a process started with SIGINT ignored (a launcher run in the background by a
    non-interactive shell, e.g. CI or a detached driver) passes that to its children, and Python
    then keeps it ignored."""
    alive = [int(p) for p in pids if local_controller_alive(p)]
    targets = {p: sorted({p, *local_controller_pids(p)}) for p in alive}
    tasks = {p: local_task_pids(p) for p in alive}
    for p in alive:
        for target in targets[p]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if local_controller_alive(p)]
        if alive:
            time.sleep(0.05)
    for p in alive:
        logger.warning("local job %s did not stop within %.0f s of SIGINT: killing it", p, grace_s)
        for target in [*tasks[p], *local_task_pids(p), *reversed(targets[p])]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGKILL)


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


# ------------------------------------------------------------------ jobs and the executor


class BoundedLocalJob(submitit.LocalJob):
    """A LocalJob whose cancel() and _interrupt() reach the controller and its tasks even when a
    shell runs the setup lines."""

    def cancel(self, check: bool = True) -> None:
        if self._process is not None and self._process.poll() is None:
            cancel_local_jobs([self.job_id])

    def _interrupt(self) -> None:
        """Preemption / time limit, as on SLURM: SIGUSR2 to the job's tasks (see interrupt_local)."""
        if self._process is not None and self._process.poll() is None:
            interrupt_local(self.job_id)


class AttachedLocalJob(submitit.LocalJob):
    """A local job started by an earlier launcher: known by its recorded JobRef (pid, start time,
    folder: `local_job_alive`), not as our child."""

    ref = JobRef("")

    def get_info(self, mode: str = "force") -> dict[str, str]:
        if local_job_alive(self.ref):
            return {"jobState": "RUNNING"}
        return {"jobState": "FINISHED" if self.paths.result_pickle.exists() else "INTERRUPTED"}

    def cancel(self, check: bool = True) -> None:
        cancel_local_jobs([self.job_id])

    def _interrupt(self) -> None:
        interrupt_local(self.job_id)


class BoundedLocalExecutor(submitit.LocalExecutor):
    """submitit's LocalExecutor that runs at most `max_jobs` jobs at once.

    A submission blocks until one of this executor's jobs has ended (so submitting 100 jobs returns
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

    def wait_for_slot(self, on_ended: Callable[[], None] = lambda: None) -> None:
        """Block until fewer than max_jobs jobs run; `on_ended()` each time one has ended meanwhile."""
        self._reap()
        while len(self._running) >= self.max_jobs:
            logger.debug("%d local jobs running (max %d): waiting for one to end", len(self._running),
                         self.max_jobs)
            wait_for_any_exit([p.pid for p, _ in self._running])
            self._reap()
            on_ended()

    def _submit_command(self, command: str) -> BoundedLocalJob:
        self.wait_for_slot()
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


# ------------------------------------------------------------------ the backend


class LocalBackend(Backend):
    """Jobs as processes of this machine, one by one as slots free up. `max_jobs` / `capacity`:
    override the concurrency / the machine's size (default: what fits, `resources.local_slots`)."""

    kind = "local"
    poll_s = 1.0
    shares_cpus = True
    unit_name = "local job"

    def __init__(self, max_jobs: int | None = None, capacity: LocalCapacity | None = None) -> None:
        self.max_jobs = max_jobs
        self.capacity = capacity

    def executor(self, folder: str | os.PathLike, resources: Resources, *, env: Mapping[str, str] | None = None,
                 name: str = "crowding") -> submitit.Executor:
        cap = local_capacity() if self.capacity is None else self.capacity
        if resources.gpus and cap.gpus and resources.gpus > len(cap.gpus):
            raise ValueError(f"gpus {resources.gpus} per job, but this machine shows {len(cap.gpus)} "
                             f"GPU(s) {list(cap.gpus)}; ask for at most {len(cap.gpus)}")
        if resources.gpus and not cap.gpus:
            logger.warning("jobs ask for %d GPU(s) but this machine shows none: running them without",
                           resources.gpus)
        slots = local_slots(resources, cap) if self.max_jobs is None else self.max_jobs
        ex = BoundedLocalExecutor(Path(folder), max_jobs=slots, gpus=cap.gpus if resources.gpus else ())
        # The controller's own output goes to a file of the folder, not to the launcher's terminal
        # or a detached driver's log (a cancelled controller prints its KeyboardInterrupt there).
        log = shlex.quote(str(ex.folder / CONTROLLER_LOG))
        ex.update_parameters(timeout_min=resources.time_min, signal_delay_s=resources.signal_delay,
                             gpus_per_node=resources.gpus if cap.gpus else 0,
                             setup=[*setup_lines(thread_env(resources, env)), f"exec >>{log} 2>&1"])
        return ex

    def submit(self, executor: submitit.Executor, calls: Sequence[Callable[[], Any]],
               on_submit: Callable[[int, Job[Any]], None], guard: Guard = contextlib.nullcontext,
               on_wait: Callable[[], None] = lambda: None) -> list[Job[Any]]:
        """One by one as slots free up; the guard is held only while a job starts, not while waiting
        for its slot, and `on_wait()` runs each time a job has ended meanwhile."""
        assert isinstance(executor, BoundedLocalExecutor)
        jobs = []
        for i, call in enumerate(calls):
            executor.wait_for_slot(on_wait)
            with guard():
                job = executor.submit(call)
                jobs.append(job)
                on_submit(i, job)
        return jobs

    def ref(self, job: Job[Any], folder: str | os.PathLike) -> JobRef:
        return JobRef(str(job.job_id), str(Path(folder).absolute()), procs.start_time(job.job_id))

    def queue_ref(self) -> JobRef:
        """What a run waiting for a slot in this launcher records: pending while the launcher lives."""
        return JobRef(f"{QUEUED}{os.getpid()}", "", procs.start_time(os.getpid()))

    def states(self, jobs: Sequence[JobRef | str]) -> dict[str, JobState]:
        """Running for a live controller (pending for a run waiting in a live launcher); a dead one,
        or a pid now used by another process, is left out."""
        refs = [JobRef.of(j) for j in jobs]
        return {r.job_id: JobState("pending", "QUEUED") if r.job_id.startswith(QUEUED) else JobState("running")
                for r in refs if local_job_alive(r)}

    def attach(self, folder: str | os.PathLike, job: JobRef | str) -> Job[Any] | None:
        """None when the controller is gone without leaving a result (resubmit; the run lock keeps
        copies apart), or the run was still waiting for a slot in a launcher that is gone."""
        ref = JobRef.of(job)
        if ref.job_id.startswith(QUEUED):
            return None
        attached = AttachedLocalJob(folder=Path(folder), job_id=ref.job_id)
        attached.ref = ref
        if local_job_alive(ref) or attached.paths.result_pickle.exists():
            return attached
        return None

    def queued(self, folder: str | os.PathLike) -> list[JobRef]:
        """Local controllers of this machine whose command line names a folder in `folder` (the
        outermost process of each: the shell that wraps a controller, where there is one)."""
        root = str(Path(folder).absolute())
        found = {}
        for pid in procs.pids():
            line = procs.cmdline(pid)
            if LOCAL_CONTROLLER in line and (f"{root}/" in line or line.endswith(root)):
                found[pid] = JobRef(str(pid), "", procs.start_time(pid))
        return [ref for pid, ref in found.items() if procs.parent(pid) not in found]

    def cancel_command(self, units: Sequence[str]) -> str:
        pids = [u for u in units if not u.startswith(QUEUED)]
        return f"kill -INT {' '.join(pids)}" if pids else ""

    def cancel(self, jobs: Sequence[JobRef | str], wait_s: float) -> list[str]:
        """Only processes that are still these jobs (pid, start time, folder) are signalled: controllers
        as `cancel_local_jobs` does. A run still waiting for a slot has no process of its own: its
        launcher is stopped (`procs.stop_process`, SIGINT first), so that it starts nothing more; a
        process of `start` (a detached driver) likewise, SIGTERM first."""
        refs = [r for r in map(JobRef.of, jobs) if local_job_alive(r)]
        queued = [r for r in refs if r.job_id.startswith(QUEUED)]
        controllers = [r for r in refs if r not in queued and LOCAL_CONTROLLER in procs.cmdline(r.job_id)]
        cancel_local_jobs([r.job_id for r in controllers])
        for r in refs:
            if r in queued:  # its launcher: SIGINT first (it ends as after Ctrl-C)
                procs.stop_process(int(r.job_id[len(QUEUED):]), r.token, wait_s, first=signal.SIGINT)
            elif r not in controllers:  # a process of `start` (a detached driver)
                procs.stop_process(int(r.job_id), r.token, wait_s, first=signal.SIGTERM)
        return []

    def start(self, module: str, args: Sequence[str], *, folder: str | os.PathLike, resources: Resources,
              cwd: str, name: str = "crowding", ok: Sequence[int] = (0,)) -> Started:
        """A background process in a session of its own, its output appended to FOLDER/NAME.log."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        log = Path(folder).absolute() / f"{name}.log"
        with open(log, "a") as f:
            f.write(f"---- {time.strftime('%Y-%m-%d %H:%M:%S')}: python -m {module} {shlex.join(args)}\n")
            f.flush()
            proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, stdin=subprocess.DEVNULL,
                                    stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return Started(JobRef(str(proc.pid), "", procs.start_time(proc.pid)), log)

    def current(self, job: JobRef) -> bool:
        return job.job_id == str(os.getpid()) and (not job.token or job.token == procs.start_time(os.getpid()))
