"""--detach: the launcher itself as one small job, started through the experiment's backend
(`Backend.start`: a SLURM job of 1 CPU and no GPU, or a background process on this machine) and
recorded in <experiment>/driver.json, so that --status shows it, --cancel stops it, and a second
launch refuses while it runs (exit 3, naming it). Nothing here knows which scheduler runs it.

The driver runs `python -m sweeps.detached DRIVER_JSON ARGV`: the launcher with the same options (so
it resumes, re-attaches and holds the launch lock exactly as a launcher in a terminal would), then
its exit status into driver.json, so that --status tells a clean end from a killed driver. Killed,
preempted or requeued, it loses nothing: a relaunch (detached or not) continues from the run folders.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cluster.backends import BACKENDS
from cluster.resources import Resources
from core.atomic import CorruptFileError, atomic_write_json, read_json, update_json
from core.layout import DRIVER_JSON, DRIVER_LOGS, logs_dir
from core.runs import JobRef

from .experiment import tail

DRIVER_MEM_GB = 4  # the driver collects the results table and draws the figures at the end
DRIVER_MODULE = "sweeps.detached"  # what the driver job runs: python -m sweeps.detached DRIVER_JSON ARGV
DRIVER_OK = (0, 1)  # the launcher's exit statuses that end a driver well (1: some runs failed, in the table)

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------ driver.json


def read_driver(exp: Path) -> dict[str, Any] | None:
    """driver.json (None when the experiment was never detached). A damaged one raises
    CorruptFileError naming the file."""
    rec = read_json(exp / DRIVER_JSON, ("executor", "job_id"))
    if rec is not None and rec["executor"] not in BACKENDS:
        raise CorruptFileError(f"{exp / DRIVER_JSON} names executor {rec['executor']!r}, not one of "
                               f"{', '.join(BACKENDS)}")
    return rec


def _ref(rec: dict[str, Any]) -> JobRef:
    return JobRef.from_submission(rec)


def driver_state(rec: dict[str, Any]) -> tuple[str, bool]:
    """(the driver's state, whether it is queued or running). The scheduler's word while it runs
    (RUNNING, PENDING); once it has ended: ENDED (the launcher finished: every run done, or some
    failed), FAILED (another exit status), CANCELLED (by --cancel), else the scheduler's word for the
    end (CANCELLED, TIMEOUT...), or KILLED when nothing recorded one (SIGKILL, a reboot...)."""
    state = BACKENDS[rec["executor"]]().states([_ref(rec)]).get(str(rec["job_id"]))
    if state is not None and state.active:
        return str(state), True
    if rec.get("cancelled"):
        return "CANCELLED", False
    if "exit" in rec:
        return ("ENDED" if rec["exit"] in DRIVER_OK else "FAILED"), False
    return (str(state) if state is not None else "KILLED"), False


def busy(exp: Path) -> str:
    """Why a launch must not start now: a detached driver of this experiment is queued or running
    (and this process is not it). Empty when free."""
    try:
        rec = read_driver(exp)
    except CorruptFileError as e:  # a running driver holds the launch lock, which the caller has
        logger.warning("%s; a driver still queued would not be seen", e)
        return ""
    if rec is None or BACKENDS[rec["executor"]]().current(_ref(rec)):
        return ""
    state, active = driver_state(rec)
    if not active:
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
    record = str((exp / DRIVER_JSON).absolute())
    started = BACKENDS[kind]().start(DRIVER_MODULE, [record, *argv], folder=logs_dir(exp, DRIVER_LOGS),
                                     resources=resources, cwd=cwd, name=f"{name}-driver", ok=DRIVER_OK)
    rec = {"executor": kind, "job_id": started.ref.job_id, "folder": started.ref.folder, "token": started.ref.token,
           "log": str(started.log), **({"err": str(started.err)} if started.err else {}),
           "command": "python -m sweeps.launch " + " ".join(argv), "cwd": cwd,
           "started": time.strftime("%Y-%m-%d %H:%M:%S"), "host": socket.gethostname()}
    atomic_write_json(exp / DRIVER_JSON, rec)
    return rec


# ------------------------------------------------------------------ --status, --logs, --cancel


def status_lines(exp: Path) -> list[str]:
    """The driver's line of --status (and its last log line once it has ended)."""
    try:
        rec = read_driver(exp)
    except CorruptFileError as e:
        return [f"driver   damaged record: {e}; --cancel still finds the driver through the scheduler"]
    if rec is None:
        return []
    state, active = driver_state(rec)
    lines = [f"driver   job {rec['job_id']} ({rec['executor']}): {state}, started {rec.get('started', '?')}, "
             f"log {rec.get('log', '?')}"]
    if not active:
        try:
            last = [line for line in tail(Path(rec["log"]), 5) if line.strip()]
        except OSError:
            last = []
        if last:
            lines.append(f"    last log line: {last[-1]}")
    return lines


def logs_lines(exp: Path, n: int) -> list[str]:
    try:
        rec = read_driver(exp)
    except CorruptFileError as e:
        raise ValueError(f"{e}: the driver's log is in {exp / 'logs' / 'driver'}") from None
    if rec is None:
        raise ValueError(f"{exp} has no driver.json: this experiment was never launched with --detach")
    state, _ = driver_state(rec)
    lines = [f"driver job {rec['job_id']} ({rec['executor']}): {state}, started {rec.get('started', '?')}"]
    for key in ("log", "err"):
        path = Path(rec[key]) if rec.get(key) else None
        if path is not None and path.is_file():
            lines.append(f"==> {path} (last {n} lines) <==")
            lines += tail(path, n)
        elif path is not None:
            lines.append(f"{path}: not written yet")
    return lines


def cancel(exp: Path, wait_s: float = 60.0) -> list[str]:
    """Stop the driver if it is queued or running (its backend's cancel: scancel; locally SIGTERM, then
    SIGKILL), and wait until it is gone. (The caller has marked the experiment cancelled first: a
    driver still running meanwhile submits nothing.)"""
    try:
        rec = read_driver(exp)
    except CorruptFileError as e:
        return [f"{e}: the driver is stopped through launch.json and the scheduler instead"]
    backend = BACKENDS[rec["executor"]]() if rec is not None else None
    if rec is None or backend is None or backend.current(_ref(rec)):
        return []
    state, active = driver_state(rec)
    if not active:
        return []
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    # under the record's lock, on the record as it is now: the driver may be writing its exit status
    update_json(exp / DRIVER_JSON, lambda now: {**now, "cancelled": stamp}
                if now is not None and str(now.get("job_id")) == str(rec["job_id"]) else None)
    backend.cancel([_ref(rec)], wait_s)
    return [f"cancelled the driver: job {rec['job_id']} ({rec['executor']}, was {state})"]
