"""Asking the scheduler: job states in one batched query, cluster limits, re-attaching to a job by id."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import submitit

logger = logging.getLogger(__name__)

LOCAL_CONTROLLER = "submitit.local._local"  # in the command line of every local job's controller
_ARRAY_RANGE = re.compile(r"^(?P<main>\d+)_\[(?P<ranges>[\d,\-]+)(%\d+)?\]$")
_TIMEOUT_S = 60


@functools.cache
def max_array_size() -> int:
    """The cluster's MaxArraySize (array indices run 0 .. MaxArraySize-1), read once."""
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=_TIMEOUT_S)
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out.stdout, re.MULTILINE)
    if out.returncode != 0 or match is None:
        logger.warning("could not read MaxArraySize from `scontrol show config` (%s); assuming 1001",
                       out.stderr.strip() or "not listed")
        return 1001
    return int(match.group(1))


def _expand(job_id: str) -> list[str]:
    """sacct/squeue ids -> task ids: "12_[3-5,8%2]" -> 12_3 12_4 12_5 12_8; "12_3", "12" unchanged."""
    match = _ARRAY_RANGE.match(job_id)
    if match is None:
        return [job_id]
    out = []
    for part in match.group("ranges").split(","):
        low, _, high = part.partition("-")
        out += [f"{match.group('main')}_{i}" for i in range(int(low), int(high or low) + 1)]
    return out


def parse_states(text: str) -> dict[str, str]:
    """`ID|STATE` lines (sacct -P -n / squeue -h) -> {task id: STATE}; "CANCELLED by 0" -> CANCELLED."""
    states: dict[str, str] = {}
    ranged: dict[str, str] = {}
    for line in text.splitlines():
        job_id, sep, state = line.strip().partition("|")
        if not sep or not job_id or "." in job_id or "+" in job_id:
            continue  # job steps (12.batch) and heterogeneous components
        state = state.split()[0].rstrip("+") if state.strip() else "UNKNOWN"
        if _ARRAY_RANGE.match(job_id):
            ranged.update(dict.fromkeys(_expand(job_id), state))
        else:
            states[job_id] = state
    # sacct keeps a pending range ("55_[1-2%3] PENDING") beside a task that has started since
    # ("55_1 RUNNING"): a task's own line wins, whatever the order.
    return {**ranged, **states}


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        logger.warning("%s failed: %s", cmd[0], e)
        return None


def slurm_states(job_ids: Iterable[str]) -> dict[str, str]:
    """{job id: sacct state} from ONE sacct call (all tasks of the arrays involved); ids sacct does not
    know yet (accounting lags a second or so) or all of them, if sacct fails, come from one squeue call."""
    wanted = sorted({str(j) for j in job_ids if str(j)})
    if not wanted:
        return {}
    bases = sorted({j.split("_")[0] for j in wanted}, key=lambda b: (len(b), b))
    states: dict[str, str] = {}
    # -X: the allocation only (no steps); -P/-n: parsable, no header. With -j, sacct reports the most
    # recent job of each id (ids restart when a cluster's state is reset).
    out = _run(["sacct", "-X", "-P", "-n", "-o", "JobID,State", "-j", ",".join(bases)])
    if out is not None and out.returncode == 0:
        states = parse_states(out.stdout)
    elif out is not None:
        logger.warning("sacct failed (%s); asking squeue, which knows only recent jobs", out.stderr.strip())
    missing = [j for j in wanted if j not in states]
    if missing:
        bases = sorted({j.split("_")[0] for j in missing}, key=lambda b: (len(b), b))
        out = _run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", ",".join(bases)])
        if out is not None and out.returncode == 0:
            queued = parse_states(out.stdout)
            states.update({j: queued[j] for j in missing if j in queued})
    return {j: states[j] for j in wanted if j in states}


def slurm_queue() -> set[str]:
    """The job ids squeue lists, whatever their state (completing ones too), array tasks by their
    array's id: one squeue call; empty when squeue fails."""
    out = _run(["squeue", "-h", "-r", "-o", "%F"])  # %F: the array id for every task (%A is the task's own id once it runs)
    return set(out.stdout.split()) if out is not None and out.returncode == 0 else set()


def local_controller_alive(pid: int | str) -> bool:
    """True when `pid` is a live submitit local controller (pids are reused, so the command line is checked)."""
    try:
        cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes()  # empty for a zombie
    except (OSError, ValueError):
        return False
    return LOCAL_CONTROLLER.encode() in cmdline


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
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def local_task_pids(pid: int | str) -> list[int]:
    """The task processes of a local job (its controller's children): the Python that runs the job body."""
    out = []
    for controller in local_controller_pids(pid):
        try:
            out += [int(c) for c in Path(f"/proc/{controller}/task/{controller}/children").read_text().split()]
        except OSError:
            continue
    return out


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


def cancel_local(pid: int | str, grace_s: float = 5.0) -> None:
    """Cancel a local job as `scancel` does: ask, then kill. SIGINT to its controller (which then
    stops its tasks); signalling the wrapping shell alone would do nothing, as a non-interactive
    shell waits for its child first. A controller that is still alive after `grace_s` seconds gets
    its tasks, itself and its shell SIGKILLed: it may never see the SIGINT, because a process
    started with SIGINT ignored (a launcher run in the background by a non-interactive shell, e.g.
    CI or a detached driver) passes that to its children, and Python then keeps it ignored."""
    cancel_local_jobs([pid], grace_s)


def cancel_local_jobs(pids: Iterable[int | str], grace_s: float = 5.0) -> None:
    """`cancel_local` for several jobs at once: one grace period for all of them."""
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


def scheduler_states(kind: str, job_ids: Iterable[str]) -> dict[str, str]:
    """{job id: state, in sacct's names} for the jobs the scheduler still knows.

    slurm: RUNNING, PENDING, COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY...; local: RUNNING for
    a live controller (a dead one is left out); debug: {} (jobs run inside the launcher).
    Feed the result to `core.runs.run_state(run_dir, scheduler)`."""
    if kind == "slurm":
        return slurm_states(job_ids)
    if kind == "local":
        return {str(j): "RUNNING" for j in job_ids if local_controller_alive(j)}
    if kind == "debug":
        return {}
    raise ValueError(f"executor kind {kind!r} is not one of slurm, local, debug")


class SlurmJob(submitit.SlurmJob):
    """submitit's SlurmJob that also ends when the scheduler has forgotten the job altogether.

    submitit waits as long as sacct says nothing about a job ("UNKNOWN"): forever when it never
    will. An array task cancelled while pending is such a job: it leaves no trace in sacct nor in
    squeue, and a launcher waiting on it would hang. Once neither sacct nor squeue (the controller,
    which lists every pending and running job, and ended ones for MinJobAge) has known the job for
    `gone_after_s`, it counts as ended: result() then raises UncompletedJobError, the launcher records
    the run as failed, and the next launch resubmits it."""

    gone_after_s = 30.0

    def done(self, force_check: bool = False) -> bool:
        if super().done(force_check):
            return True
        if self._sub_jobs or self.watcher.get_state(self.job_id, mode="cache").upper() != "UNKNOWN":
            self.__dict__.pop("_unknown_since", None)
            return False
        now = time.time()
        since = self.__dict__.setdefault("_unknown_since", now)
        if now - since < self.gone_after_s:
            return False
        if self.job_id in slurm_states([self.job_id]):  # known after all: wait on
            self.__dict__["_unknown_since"] = now
            return False
        logger.warning("job %s is unknown to sacct and squeue since %.0f s: taking it as ended", self.job_id,
                       now - since)
        return True


def with_gone_check(job: submitit.Job[Any]) -> submitit.Job[Any]:
    """A submitted SLURM job as a `SlurmJob` of this module (submitit builds array tasks as its own)."""
    if type(job) is submitit.SlurmJob:
        job.__class__ = SlurmJob
    return job


class AttachedLocalJob(submitit.LocalJob):
    """A local job started by an earlier launcher: known by its controller pid, not as our child."""

    def get_info(self, mode: str = "force") -> dict[str, str]:
        if local_controller_alive(self.job_id):
            return {"jobState": "RUNNING"}
        return {"jobState": "FINISHED" if self.paths.result_pickle.exists() else "INTERRUPTED"}

    def cancel(self, check: bool = True) -> None:
        cancel_local(self.job_id)

    def _interrupt(self) -> None:
        interrupt_local(self.job_id)


def attach(kind: str, folder: str | os.PathLike, job_id: str) -> submitit.Job[Any] | None:
    """A Job for one submitted earlier (e.g. by a launcher that has since restarted), from the executor's
    folder and the id recorded in submission.json; wait on it with `.result()` like a fresh one.

    None when there is nothing to wait for: a debug job (it ran inside its launcher), or a local job
    whose controller is gone without leaving a result (resubmit it; the run lock keeps copies apart).
    A SLURM job is always attachable: the scheduler knows how it ended."""
    if kind == "slurm":
        return SlurmJob(folder=Path(folder), job_id=str(job_id))
    if kind == "local":
        job = AttachedLocalJob(folder=Path(folder), job_id=str(job_id))
        if local_controller_alive(job_id) or job.paths.result_pickle.exists():
            return job
        return None
    if kind == "debug":
        return None
    raise ValueError(f"executor kind {kind!r} is not one of slurm, local, debug")
