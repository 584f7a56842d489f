"""A running experiment seen from a login node: --status with progress and log files, --logs RUN,
--cancel, and the jobs a spec edit left behind (orphans).

Everything here reads the experiment folder (run folders, driver.json) plus batched scheduler
queries; nothing is kept anywhere else, so these commands work from any shell, any time.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from cluster.backends import BACKENDS
from core import cancel as cancel_mark
from core import procs
from core.atomic import CorruptFileError, atomic_write_json, read_json
from core.layout import ERROR, LAUNCH_JSON, LAUNCH_LOCK, logs_root
from core.runs import CANCELLED, RunState, read_result, read_submission, write_error
from results.table import DIVERGED_DROP, best_val_acc, diverged

from . import driver
from .experiment import (
    TAIL_LINES,
    ActiveJob,
    active_jobs,
    cancel_command,
    log_files,
    orphan_lines,
    submitted_runs,
    tail,
    training_progress,
)

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .stages import Unit

logger = logging.getLogger(__name__)

CANCEL_ROUNDS = 5  # --cancel asks the scheduler again after each round, until it holds nothing of the experiment


# ------------------------------------------------------------------ --status, --logs


def status_lines(pipeline: Pipeline) -> list[str]:
    """Per stage: counts, each failed run with its error and log files, each running training's
    progress; then the driver (when detached) and orphaned jobs."""

    lines = []
    for stage, units in pipeline.planned():
        states = pipeline.states(units, stage.kind)
        report = pipeline.report(stage.name, units, states)
        lines.append(report.line())
        for u in units:
            s: RunState = states[u.run_dir]
            if s.state == "failed" and not s.cancelled:
                lines.append(f"    failed: {u.label}: {s.error}")
                logs = log_files(pipeline.exp, u.run_dir)
                lines.append("        logs: " + (", ".join(str(p) for p in logs) if logs else
                                                 f"none (see {u.run_dir / ERROR})"))
            elif s.state == "done" and stage.name == "train" and (line := _diverged(u)):
                lines.append(line)
            elif s.state == "running" and stage.name == "train":
                lines.append(f"    running: {u.label} (job {s.job_id}): "
                             f"{training_progress(u.run_dir, u.payload.config.batch_size)}")
    lines += driver.status_lines(pipeline.exp)
    lines += orphan_lines(pipeline.exp, pipeline.planned_dirs())
    return lines


def _diverged(u: Unit) -> str:
    """`    diverged: LABEL: ...` for a finished training whose final val/acc fell far below its best
    (results.table.diverged: evaluation uses the final weights), else ""."""
    result = read_result(u.run_dir, "train") or {}
    final, best = result.get("final", {}).get("val/acc"), best_val_acc(u.run_dir)
    if not isinstance(final, (int, float)) or not diverged(best, float(final)):
        return ""
    return (f"    diverged: {u.label}: final val/acc {final:.4f}, best {best:.4f} (more than "
            f"{100 * DIVERGED_DROP:g} points below; evaluation uses the final weights)")


def find_units(pipeline: Pipeline, key: str) -> list[Unit]:
    """The planned runs a --logs argument names: a label exactly, else a run folder name prefix."""
    units = [u for _, stage_units in pipeline.planned() for u in stage_units]
    exact = [u for u in units if u.label == key]
    return exact or [u for u in units if key and u.run_dir.name.startswith(key)]


def logs_lines(pipeline: Pipeline, key: str, n: int = TAIL_LINES) -> list[str]:
    """Paths and tails of one run's stdout/stderr (or the driver's log for `driver`). ValueError when
    `key` names no run or several."""
    if key == "driver":
        return driver.logs_lines(pipeline.exp, n)
    found = find_units(pipeline, key)
    if not found:
        raise ValueError(f"no run of {pipeline.spec.name!r} is labelled {key!r} or has a folder starting with it; "
                         "--status lists the runs, e.g. --logs 'LABEL' or --logs HASH_PREFIX, or --logs driver")
    if len(found) > 1:
        raise ValueError(f"{key!r} names {len(found)} runs: "
                         + ", ".join(f"{u.run_dir.name} ({u.label})" for u in found[:8])
                         + (" ..." if len(found) > 8 else "") + "; give a longer prefix")
    (u,) = found
    (state,) = pipeline.states([u]).values()
    sub = read_submission(u.run_dir) or {}
    lines = [f"{u.label}: {'cancelled' if state.cancelled else state.state}"
             + (f", job {sub['job_id']} ({sub['executor']})" if sub else ", never submitted"),
             f"run folder: {u.run_dir}"]
    if state.error:
        lines.append(f"error: {state.error}")
    logs = log_files(pipeline.exp, u.run_dir)
    if not logs:
        backend = BACKENDS.get(sub.get("executor", ""))
        lines.append("no log files" + (f" (the {backend.kind} executor runs jobs inside the launcher)"
                                       if backend is not None and not backend.writes_logs else ""))
    for path in logs:
        lines.append(f"==> {path} (last {n} lines) <==")
        lines += tail(path, n)
    return lines


# ------------------------------------------------------------------ --cancel


def cancel(pipeline: Pipeline, wait_s: float = 120.0) -> list[str]:
    """Cancel the experiment: afterwards nothing of it is queued or running, and nothing submits more.

    1. Mark it cancelled (core.cancel): from then on no launcher that started before submits a job
       (a submission in progress finishes recording its jobs first, so they are found below).
    2. Stop what launches: the detached driver (driver.json) and the launcher that holds the
       experiment (launch.json: pid and start time, on this host), and take the launch lock, so that
       no launch starts while the jobs are cancelled.
    3. Cancel jobs until the scheduler holds nothing of the experiment: those its run folders record,
       and those the scheduler lists under its logs folder (a job whose submission.json was never
       written: its launcher was killed between the scheduler call and the record).
    The runs left without a result get an error.json of type Cancelled, which --status shows as
    cancelled and a later launch resubmits. Runs that are done are not touched."""
    exp = pipeline.exp
    mark = cancel_mark.raise_mark(exp)
    deadline = time.monotonic() + wait_s
    lines = driver.cancel(exp)
    lock = FileLock(str(exp / LAUNCH_LOCK))
    lines += _stop_launcher(exp, lock, wait_s)
    try:
        lines += _cancel_jobs(pipeline, mark, deadline)
    finally:
        if lock.is_locked:
            lock.release()
    return lines


def _stop_launcher(exp: Path, lock: FileLock, wait_s: float) -> list[str]:
    """Stop the launcher that holds the experiment (SIGINT, then SIGTERM, then SIGKILL) when it runs on
    this host, and take the launch lock; returns what was done."""
    try:
        lock.acquire(timeout=0)
        return []
    except Timeout:
        pass
    try:
        holder = read_json(exp / LAUNCH_JSON) or {}
    except CorruptFileError:
        holder = {}
    pid, host = holder.get("pid"), holder.get("host", "?")
    lines = []
    if pid is not None and host == socket.gethostname() and int(pid) != os.getpid():
        was = "running" if procs.alive(pid, token=str(holder.get("token", ""))) else "ending"
        procs.stop_process(int(pid), str(holder.get("token", "")), wait_s)
        lines.append(f"stopped the launcher: pid {pid} ({holder.get('command', '?')}, was {was})")
    try:
        lock.acquire(timeout=wait_s)
    except Timeout:
        lines.append(f"the launcher pid {pid or '?'} on {host} still holds {exp / LAUNCH_LOCK}: it cannot be stopped "
                     "from here; it submits nothing more (the experiment is marked cancelled)")
        return lines
    atomic_write_json(exp / LAUNCH_JSON, {"pid": os.getpid(), "token": procs.start_time(os.getpid()),
                                          "host": socket.gethostname(), "command": "--cancel",
                                          "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    return lines


def _cancel_jobs(pipeline: Pipeline, mark: dict, deadline: float) -> list[str]:
    """Cancel, round after round, every job the run folders record and every job the scheduler lists
    under the experiment's logs folder, until there is none (or the deadline)."""
    exp, lines = pipeline.exp, []
    cancelled: dict[Path, ActiveJob] = {}
    strays: set[tuple[str, str]] = set()
    stamp = mark.get("when", time.strftime("%Y-%m-%d %H:%M:%S"))
    backends = {kind: BACKENDS[kind]() for kind in _kinds(pipeline)}
    for _ in range(CANCEL_ROUNDS):
        jobs = active_jobs(exp)
        units = {(j.executor, j.array) for j in jobs}
        skip = units | _done_units(exp)
        found = {(kind, backend.cancel_unit(r.job_id)): r for kind, backend in backends.items()
                 for r in backend.queued(logs_root(exp)) if (kind, backend.cancel_unit(r.job_id)) not in skip}
        if not jobs and not found:
            break
        for kind in BACKENDS:
            refs = [j.ref for j in jobs if j.executor == kind] + [r for (k, _), r in found.items() if k == kind]
            if refs:
                # each backend waits until its jobs are gone: one killed while writing its own
                # error.json must not overwrite ours
                lines += BACKENDS[kind]().cancel(refs, max(1.0, deadline - time.monotonic()))
        for j in jobs:
            if read_result(j.run_dir) is None:
                write_error(j.run_dir, message=f"job {j.job_id} cancelled by --cancel at {stamp}", kind=CANCELLED)
            cancelled.setdefault(j.run_dir, j)
        strays |= set(found)
        if time.monotonic() > deadline:
            break
    left = active_jobs(exp) if cancelled or strays else []
    if left:
        lines.append("the scheduler still lists jobs of this experiment; run --cancel again, or: "
                     + cancel_command(left))
    by_array: dict[tuple[str, str, str], list[ActiveJob]] = {}
    for j in cancelled.values():
        by_array.setdefault((j.stage, j.executor, j.array), []).append(j)
    for (stage, kind, array), group in sorted(by_array.items()):
        what = f"{BACKENDS[kind].unit_name} {array}"
        lines.append(f"cancelled [{stage}] {what} ({kind}): {len(group)} run(s), "
                     + ", ".join(sorted({j.state for j in group})))
    for kind, unit in sorted(strays):
        lines.append(f"cancelled {BACKENDS[kind].unit_name} {unit} ({kind}): listed by the scheduler under "
                     f"{exp / 'logs'}, recorded by no run folder")
    if not by_array and not strays:
        return [*lines, "no queued or running stage job to cancel"]
    n_runs = sum(len(g) for g in by_array.values())
    lines.append(f"cancelled {n_runs} run(s) in {len(by_array) + len(strays)} job(s); relaunch the same command to "
                 "resubmit them")
    return lines


def _done_units(exp: Path) -> set[tuple[str, str]]:
    """(executor, cancel unit) of the jobs whose runs are done (a finished job still exiting is left alone)."""
    out = set()
    for d in submitted_runs(exp):
        sub = read_submission(d)
        if sub and sub["executor"] in BACKENDS and read_result(d) is not None:
            out.add((str(sub["executor"]), BACKENDS[sub["executor"]]().cancel_unit(str(sub["job_id"]))))
    return out


def _kinds(pipeline: Pipeline) -> list[str]:
    """The backends that may hold jobs of the experiment: the pipeline's, and those its run folders name."""
    kinds = {pipeline.kind} | {str(s["executor"]) for d in submitted_runs(pipeline.exp) if (s := read_submission(d))}
    return [k for k in BACKENDS if k in kinds and BACKENDS[k].available()]
