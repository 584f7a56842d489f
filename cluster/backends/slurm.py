"""SLURM: one job array per stage (chunked by MaxArraySize), states from submitit's batched sacct
watcher (squeue for what sacct does not know yet), re-attaching by job id, scancel."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import submitit
from submitit.core.core import Job
from submitit.slurm.slurm import SlurmInfoWatcher

from core.runs import JobRef, JobState

from ..resources import Resources
from .base import Backend, Guard, ModuleJob, Started, setup_lines, thread_env

logger = logging.getLogger(__name__)

_TIMEOUT_S = 60
DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default MaxArraySize


def slurm_available(timeout_s: float = 10.0) -> bool:
    """True when a SLURM controller answers `scontrol ping` (`srun` on PATH is not enough)."""
    if shutil.which("scontrol") is None:
        return False
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "UP" in out.stdout


@functools.cache
def max_array_size() -> int:
    """The cluster's MaxArraySize (array indices run 0 .. MaxArraySize-1), read once."""
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=_TIMEOUT_S)
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out.stdout, re.MULTILINE)
    if out.returncode != 0 or match is None:
        logger.warning("could not read MaxArraySize from `scontrol show config` (%s); assuming %d",
                       out.stderr.strip() or "not listed", DEFAULT_MAX_ARRAY_SIZE)
        return DEFAULT_MAX_ARRAY_SIZE
    return int(match.group(1))


def chunk_sizes(n: int, max_size: int) -> list[int]:
    """Sizes of the fewest, most equal chunks of n items, none over max_size: (2500, 1001) -> [834, 833, 833]."""
    if n <= 0:
        return []
    k = math.ceil(n / max_size)
    return [n // k + (i < n % k) for i in range(k)]


# ------------------------------------------------------------------ states


class SacctWatcher(SlurmInfoWatcher):
    """submitit's sacct reader (one call for every array involved, array ranges expanded), where a
    task's own line wins over its array's range: sacct keeps a pending range ("55_[1-2%3] PENDING")
    beside a task that has started since ("55_1 RUNNING"), in either order."""

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        text = string.decode() if isinstance(string, bytes) else string
        header, *rows = text.splitlines() or [""]
        ranges = [row for row in rows if "[" in row.partition("|")[0]]
        own = [row for row in rows if "[" not in row.partition("|")[0]]
        return super().read_info("\n".join([header, *ranges, *own]))


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        logger.warning("%s failed: %s", cmd[0], e)
        return None


def _bases(job_ids: Iterable[str]) -> str:
    return ",".join(sorted({j.split("_")[0] for j in job_ids}, key=lambda b: (len(b), b)))


# sacct's and squeue's names for a job's state, in our words (core.runs.JOB_STATES).
SACCT_STATES = {
    **dict.fromkeys(("PENDING", "REQUEUED", "CONFIGURING", "RESIZING", "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED",
                     "RESV_DEL_HOLD", "STOPPED"), "pending"),
    **dict.fromkeys(("RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"), "running"),
    "COMPLETED": "completed",
    "CANCELLED": "cancelled",
    **dict.fromkeys(("FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
                     "REVOKED", "SPECIAL_EXIT"), "failed"),
}


def _state_name(state: str) -> str:
    """"CANCELLED by 0" -> CANCELLED, "COMPLETED+" -> COMPLETED."""
    return state.split()[0].rstrip("+") if state.strip() else "UNKNOWN"


def slurm_states(job_ids: Iterable[str]) -> dict[str, str]:
    """{job id: sacct state} from ONE sacct call (submitit's watcher: all tasks of the arrays involved);
    ids sacct does not know yet (accounting lags a second or so) or all of them, if sacct fails, come
    from one squeue call."""
    wanted = sorted({str(j) for j in job_ids if str(j)})
    if not wanted:
        return {}
    watcher = SacctWatcher()
    for job_id in wanted:
        watcher.register_job(job_id)
    watcher.update()  # a failing sacct is logged by submitit and leaves every state UNKNOWN
    states = {j: _state_name(watcher.get_state(j, mode="cache")) for j in wanted}
    states = {j: s for j, s in states.items() if s != "UNKNOWN"}
    missing = [j for j in wanted if j not in states]
    if missing:
        # -r: one line per array task; -t all: ended ones too, for as long as the controller keeps them
        out = _run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", _bases(missing)])
        if out is not None and out.returncode == 0:
            queued = dict(line.strip().partition("|")[::2] for line in out.stdout.splitlines() if "|" in line)
            states.update({j: _state_name(queued[j]) for j in missing if j in queued})
    return {j: states[j] for j in wanted if j in states}


def slurm_queue() -> set[str]:
    """The job ids squeue lists, whatever their state (completing ones too), array tasks by their
    array's id: one squeue call; empty when squeue fails."""
    out = _run(["squeue", "-h", "-r", "-o", "%F"])  # %F: the array id for every task (%A is the task's own id once it runs)
    return set(out.stdout.split()) if out is not None and out.returncode == 0 else set()


# ------------------------------------------------------------------ the backend


class SlurmBackend(Backend):
    """Jobs on a SLURM cluster. A stage is one array job (several when it exceeds MaxArraySize: equal
    chunks, each with an equal share of `array_parallelism`, so the stage never runs more than that
    many tasks at once). `max_array_size`: the largest array (None: the cluster's MaxArraySize)."""

    kind = "slurm"
    poll_s = 5.0
    unit_name = "array"
    gone_after_s = 30.0  # a job unknown to sacct and squeue this long has been forgotten (see gone)

    def __init__(self, max_array_size: int | None = None) -> None:
        if max_array_size is not None and (isinstance(max_array_size, bool) or not isinstance(max_array_size, int)
                                           or max_array_size < 1):
            raise ValueError(f"max_array_size {max_array_size!r} must be an integer >= 1, or None for the cluster's")
        self.max_array_size = max_array_size
        self._unknown_since: dict[str, float] = {}

    @classmethod
    def available(cls) -> bool:
        return slurm_available()

    def executor(self, folder: str | os.PathLike, resources: Resources, *, env: Mapping[str, str] | None = None,
                 name: str = "crowding") -> submitit.Executor:
        if not slurm_available():
            raise RuntimeError("executor 'slurm' was asked for, but no SLURM controller answers "
                               "`scontrol ping`; use --executor local (or auto)")
        ex = submitit.SlurmExecutor(Path(folder))
        params: dict[str, Any] = dict(
            job_name=name, time=resources.time_min, cpus_per_task=resources.cpus,
            array_parallelism=resources.array_parallelism, signal_delay_s=resources.signal_delay,
            setup=setup_lines(thread_env(resources, env)))
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

    def submit(self, executor: submitit.Executor, calls: Sequence[Callable[[], Any]],
               on_submit: Callable[[int, Job[Any]], None], guard: Guard = contextlib.nullcontext,
               on_wait: Callable[[], None] = lambda: None) -> list[Job[Any]]:
        """One array job per chunk; `on_submit` per task as soon as its chunk has been submitted, inside
        the chunk's `guard()`."""
        if not calls:
            return []
        sizes = chunk_sizes(len(calls), self.max_array_size or max_array_size())
        parallelism = executor.parameters.get("array_parallelism", 256)
        share = max(1, parallelism // len(sizes))
        if len(sizes) > 1:
            logger.info("%d jobs as %d arrays of <= %d tasks, each running <= %d at once", len(calls),
                        len(sizes), max(sizes), share)
        executor.update_parameters(array_parallelism=share)
        jobs: list[Job[Any]] = []
        try:
            start = 0
            for size in sizes:
                with guard():
                    new = executor.submit_array(list(calls[start:start + size]))
                    for i, job in enumerate(new, start):
                        on_submit(i, job)
                jobs += new
                start += size
                on_wait()
        finally:
            executor.update_parameters(array_parallelism=parallelism)
        return jobs

    def states(self, jobs: Sequence[JobRef | str]) -> dict[str, JobState]:
        out = {}
        for job_id, name in slurm_states(JobRef.of(j).job_id for j in jobs).items():
            if name in SACCT_STATES:
                out[job_id] = JobState(SACCT_STATES[name], name)
            else:
                logger.warning("job %s: SLURM state %r is not one we know; taken as unknown", job_id, name)
        return out

    def attach(self, folder: str | os.PathLike, job: JobRef | str) -> Job[Any] | None:
        """Always a job: the scheduler knows how it ended."""
        return submitit.SlurmJob(folder=Path(folder), job_id=JobRef.of(job).job_id)

    def start(self, module: str, args: Sequence[str], *, folder: str | os.PathLike, resources: Resources,
              cwd: str, name: str = "crowding", ok: Sequence[int] = (0,)) -> Started:
        job = self.executor(folder, resources, name=name).submit(ModuleJob(module, args, cwd, ok))
        return Started(JobRef(str(job.job_id), str(Path(folder).absolute())), job.paths.stdout, job.paths.stderr)

    def current(self, job: JobRef) -> bool:
        return os.environ.get("SLURM_JOB_ID") == job.job_id

    def gone(self, job: Job[Any]) -> bool:
        """True once neither sacct nor squeue has known the job for `gone_after_s`.

        submitit waits as long as sacct says nothing about a job ("UNKNOWN"): forever when it never
        will. An array task cancelled while pending is such a job: it leaves no trace in sacct nor in
        squeue (the controller lists every pending and running job, and ended ones for MinJobAge), and
        a launcher waiting on it would hang. Such a job counts as ended without output: the launcher
        records the run as failed, and the next launch resubmits it."""
        if job.state.upper() != "UNKNOWN":
            self._unknown_since.pop(job.job_id, None)
            return False
        now = time.time()
        since = self._unknown_since.setdefault(job.job_id, now)
        if now - since < self.gone_after_s:
            return False
        if job.job_id in slurm_states([job.job_id]):  # known after all: wait on
            self._unknown_since[job.job_id] = now
            return False
        logger.warning("job %s is unknown to sacct and squeue since %.0f s: taking it as ended", job.job_id,
                       now - since)
        return True

    def queued(self, folder: str | os.PathLike) -> list[JobRef]:
        """The arrays (and single jobs) squeue lists whose stdout file is in `folder` or below: one
        squeue call. Raises RuntimeError when squeue does not answer (nothing can be said then)."""
        root = str(Path(folder).absolute())
        out = _run(["squeue", "-h", "-r", "-O", "ArrayJobID:|,StdOut:|"])
        if out is None or out.returncode != 0:
            raise RuntimeError(f"squeue failed: {out.stderr.strip() if out is not None else 'no answer'}")
        arrays = set()
        for line in out.stdout.splitlines():
            array, _, stdout = line.partition("|")
            if stdout.rstrip("|").startswith(f"{root}/"):
                arrays.add(array.strip())
        return [JobRef(a) for a in sorted(arrays, key=lambda a: (len(a), a))]

    def cancel_unit(self, job_id: str) -> str:
        return job_id.split("_")[0]

    def cancel_command(self, units: Sequence[str]) -> str:
        return f"scancel {' '.join(units)}" if units else ""

    def cancel(self, jobs: Sequence[JobRef | str], wait_s: float) -> list[str]:
        """One scancel per array, then wait until squeue lists none of them (a cancelled job holds on for
        the cluster's KillWait; one killed while writing its own error.json must not overwrite ours)."""
        units = sorted({self.cancel_unit(JobRef.of(j).job_id) for j in jobs}, key=lambda u: (len(u), u))
        problems = []
        for unit in units:
            out = subprocess.run(["scancel", unit], capture_output=True, text=True, timeout=_TIMEOUT_S)
            if out.returncode != 0:
                problems.append(f"scancel {unit} failed: {out.stderr.strip()}")
        deadline = time.monotonic() + wait_s
        while units and set(units) & slurm_queue():
            if time.monotonic() >= deadline:
                logger.warning("jobs %s are still listed by squeue %.0f s after scancel", " ".join(units), wait_s)
                break
            time.sleep(1.0)
        return problems

    def describe(self, resources: Resources) -> str:
        return f"slurm, {resources.summary()}"
