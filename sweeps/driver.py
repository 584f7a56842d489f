"""--detach: the launcher itself as one small job (a SLURM job of 1 CPU and no GPU, or a background
process on this machine), recorded in <experiment>/driver.json so that --status shows it, --cancel
stops it, and a second launch refuses while it runs (exit 3, naming it).

The driver runs `python -m sweeps.launch` with the same options, so it resumes, re-attaches and
holds the launch lock exactly as a launcher in a terminal would. Killed, preempted or requeued, it
loses nothing: a relaunch (detached or not) continues from the run folders.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import submitit

from cluster.backends.slurm import SlurmBackend
from cluster.resources import Resources
from core import procs
from core.atomic import CorruptFileError, atomic_write_json, read_json
from core.runs import ACTIVE_STATES

DRIVER_JSON = "driver.json"
DRIVER_MEM_GB = 4  # the driver collects the results table and draws the figures at the end
LOCAL_LOG = "driver.log"

logger = logging.getLogger(__name__)


class DriverJob(submitit.helpers.Checkpointable):
    """What the SLURM driver job runs: `python -m sweeps.launch ARGV` in `cwd`. Checkpointable: on
    its time limit or a preemption, submitit requeues it as is, and it resumes from the run folders."""

    def __init__(self, argv: Sequence[str], cwd: str) -> None:
        self.argv, self.cwd = list(argv), cwd

    def __call__(self) -> int:
        from .launch import main

        os.chdir(self.cwd)
        code = main(self.argv)
        if code not in (0, 1):  # 1: some runs failed, which the table shows; anything else is the driver's failure
            raise RuntimeError(f"python -m sweeps.launch {' '.join(self.argv)} exited with status {code}")
        return code


def run_local(record: str, argv: Sequence[str]) -> int:
    """What the local driver process runs (`python -m sweeps.driver DRIVER_JSON ARGV`): the launcher,
    then its exit status into driver.json, so that --status tells a clean end from a killed driver."""
    from .launch import main

    code = main(list(argv))
    path = Path(record)
    try:
        rec = read_json(path)
    except CorruptFileError:
        return code
    if rec is not None and str(rec.get("job_id")) == str(os.getpid()):  # not replaced by a later --detach
        atomic_write_json(path, {**rec, "ended": time.strftime("%Y-%m-%d %H:%M:%S"), "exit": code})
    return code


# ------------------------------------------------------------------ driver.json


def read_driver(exp: Path) -> dict[str, Any] | None:
    """driver.json (None when the experiment was never detached). A damaged one raises
    CorruptFileError naming the file."""
    return read_json(exp / DRIVER_JSON, ("executor", "job_id"))


def _local_alive(rec: dict[str, Any]) -> bool:
    """The local driver process is alive: its pid, started when recorded (pids are reused), running
    the launcher."""
    return procs.alive(rec["job_id"], token=str(rec.get("token", "")), contains=("sweeps.",))


def driver_state(rec: dict[str, Any]) -> str:
    """The scheduler's state of the driver (RUNNING, PENDING, COMPLETED, CANCELLED...). Locally:
    RUNNING; ENDED (it finished: exit 0, or 1 with failed runs); FAILED (another exit status);
    CANCELLED (by --cancel); KILLED (gone without recording an end: SIGKILL, a reboot...)."""
    job_id = str(rec["job_id"])
    if rec["executor"] == "local":
        if _local_alive(rec):
            return "RUNNING"
        if rec.get("cancelled"):
            return "CANCELLED"
        if "exit" in rec:
            return "ENDED" if rec["exit"] in (0, 1) else "FAILED"
        return "KILLED"
    return SlurmBackend().states([job_id]).get(job_id, "UNKNOWN")


def is_active(state: str) -> bool:
    return state in ACTIVE_STATES


def _is_self(rec: dict[str, Any]) -> bool:
    """True inside the driver itself (its SLURM job, or its local process)."""
    if rec["executor"] == "slurm":
        return os.environ.get("SLURM_JOB_ID") == str(rec["job_id"])
    return str(os.getpid()) == str(rec["job_id"])


def busy(exp: Path) -> str:
    """Why a launch must not start now: a detached driver of this experiment is queued or running
    (and this process is not it). Empty when free."""
    try:
        rec = read_driver(exp)
    except CorruptFileError as e:  # a running driver holds the launch lock, which the caller has
        logger.warning("%s; a driver still queued would not be seen", e)
        return ""
    if rec is None or _is_self(rec):
        return ""
    state = driver_state(rec)
    if not is_active(state):
        return ""
    return (f"experiment {exp.name!r} is being run by its detached driver, job {rec['job_id']} "
            f"({rec['executor']}, {state}) since {rec.get('started', '?')}; follow it with --status or "
            "--logs driver, stop it with --cancel")


# ------------------------------------------------------------------ --detach


def detach(exp: Path, kind: str, argv: Sequence[str], *, resources: Resources, name: str,
           cwd: str) -> dict[str, Any]:
    """Start the driver (`python -m sweeps.launch ARGV`, which must name `--executor kind`) and record
    it in driver.json; returns that record. The caller has checked that the experiment is free."""
    exp.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    command = "python -m sweeps.launch " + " ".join(argv)
    if kind == "slurm":
        executor = SlurmBackend().executor(exp / "logs" / "driver", resources, name=f"{name}-driver")
        job = executor.submit(DriverJob(argv, cwd))
        rec = {"executor": "slurm", "job_id": str(job.job_id), "log": str(job.paths.stdout),
               "err": str(job.paths.stderr)}
    elif kind == "local":
        log = exp / LOCAL_LOG
        with open(log, "a") as f:
            f.write(f"---- {started}: {command}\n")
            f.flush()
            record = str((exp / DRIVER_JSON).absolute())
            proc = subprocess.Popen([sys.executable, "-m", "sweeps.driver", record, *argv], cwd=cwd,
                                    stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        rec = {"executor": "local", "job_id": str(proc.pid), "token": procs.start_time(proc.pid), "log": str(log)}
    else:
        raise ValueError(f"--detach needs the slurm or local executor, not {kind!r} (debug jobs run inside "
                         "the launcher)")
    rec.update(command=command, cwd=cwd, started=started, host=socket.gethostname())
    atomic_write_json(exp / DRIVER_JSON, rec)
    return rec


# ------------------------------------------------------------------ --status, --logs, --cancel


def status_lines(exp: Path) -> list[str]:
    try:
        rec = read_driver(exp)
    except CorruptFileError as e:
        return [f"driver   damaged record: {e}; --cancel still finds the driver through the scheduler"]
    if rec is None:
        return []
    state = driver_state(rec)
    lines = [f"driver   job {rec['job_id']} ({rec['executor']}): {state}, started {rec.get('started', '?')}, "
             f"log {rec.get('log', '?')}"]
    if not is_active(state):
        from .control import tail

        with contextlib.suppress(OSError):
            last = [line for line in tail(Path(rec["log"]), 5) if line.strip()]
            if last:
                lines.append(f"    last log line: {last[-1]}")
    return lines


def logs_lines(exp: Path, n: int) -> list[str]:
    from .control import tail

    try:
        rec = read_driver(exp)
    except CorruptFileError as e:
        raise ValueError(f"{e}: the driver's log is {exp / LOCAL_LOG} (local) or in {exp / 'logs' / 'driver'} "
                         "(SLURM)") from None
    if rec is None:
        raise ValueError(f"{exp} has no driver.json: this experiment was never launched with --detach")
    lines = [f"driver job {rec['job_id']} ({rec['executor']}): {driver_state(rec)}, started {rec.get('started', '?')}"]
    for key in ("log", "err"):
        path = Path(rec[key]) if rec.get(key) else None
        if path is not None and path.is_file():
            lines.append(f"==> {path} (last {n} lines) <==")
            lines += tail(path, n)
        elif path is not None:
            lines.append(f"{path}: not written yet")
    return lines


def cancel(exp: Path, wait_s: float = 60.0) -> list[str]:
    """Stop the driver if it is queued or running (scancel; locally SIGTERM, then SIGKILL after 10 s),
    and wait until it is gone. (The caller has marked the experiment cancelled first: a driver still
    running meanwhile submits nothing.)"""
    try:
        rec = read_driver(exp)
    except CorruptFileError as e:
        return [f"{e}: the driver is stopped through launch.json and the scheduler instead"]
    if rec is None or _is_self(rec):
        return []
    state = driver_state(rec)
    if not is_active(state):
        return []
    job_id = str(rec["job_id"])
    if rec["executor"] == "slurm":
        SlurmBackend().cancel([job_id], wait_s)  # scancel, then until squeue lets it go (KillWait)
    else:
        atomic_write_json(exp / DRIVER_JSON, {**rec, "cancelled": time.strftime("%Y-%m-%d %H:%M:%S")})
        stop_process(int(job_id), str(rec.get("token", "")), wait_s, first=signal.SIGTERM)
    return [f"cancelled the driver: job {job_id} ({rec['executor']}, was {state})"]


def stop_process(pid: int, token: str, wait_s: float, first: signal.Signals = signal.SIGINT) -> bool:
    """Stop a process of this machine (pid and start time): `first`, SIGTERM after 10 s, SIGKILL after
    20 s; waits (pidfd) until it is gone, at most `wait_s`. True when it is gone."""
    if not procs.alive(pid, token=token):
        return True
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        deadline = time.monotonic() + wait_s
        for sig, after in ((first, 10.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, wait_s)):
            if not procs.alive(pid, token=token):
                return True
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, sig)
            if select.select([fd], [], [], max(0.0, min(after, deadline - time.monotonic())))[0]:
                return True
            if time.monotonic() >= deadline:
                break
        return not procs.alive(pid, token=token)
    finally:
        os.close(fd)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(run_local(sys.argv[1], sys.argv[2:]))
