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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout
from submitit.core.utils import JobPaths

from cluster.backends import BACKENDS
from cluster.submission import scheduler_states
from core import cancel as cancel_mark
from core import procs
from core.atomic import CorruptFileError, atomic_write_json, read_json, read_jsonl
from core.runs import CANCELLED, JobRef, RunState, read_result, read_submission, write_error
from ecc.train import METRICS, PROGRESS

from . import driver
from .pipeline import LAUNCH_JSON, LAUNCH_LOCK

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .stages import Unit

logger = logging.getLogger(__name__)

TAIL_LINES = 20
CANCEL_ROUNDS = 5  # --cancel asks the scheduler again after each round, until it holds nothing of the experiment


# ------------------------------------------------------------------ jobs of this experiment


@dataclass(frozen=True)
class ActiveJob:
    """A run folder whose last job the scheduler still runs (or holds queued)."""

    run_dir: Path
    stage: str
    executor: str
    job_id: str
    state: str  # pending or running

    @property
    def array(self) -> str:
        """What one cancel call names: the array job (123 for task 123_4), a local job's pid."""
        return BACKENDS[self.executor]().cancel_unit(self.job_id)


def run_folders(exp: Path) -> list[Path]:
    """Every run folder of the experiment that was ever submitted, planned now or not."""
    return sorted({p.parent for pattern in ("datasets/jobs/*/submission.json", "train/*/submission.json",
                                            "eval/*/submission.json") for p in exp.glob(pattern)})


def active_jobs(exp: Path) -> list[ActiveJob]:
    """Queued or running jobs of the experiment's run folders (one batched query per executor),
    leaving out runs that are done already."""
    subs = {d: read_submission(d) for d in run_folders(exp)}
    subs = {d: s for d, s in subs.items() if s and s["executor"] in BACKENDS}
    states = scheduler_states(list(subs))
    out = []
    for d, s in subs.items():
        state = states.get(str(s["job_id"]))
        if state is not None and state.active and read_result(d) is None:
            out.append(ActiveJob(d, str(s.get("stage", "?")), s["executor"], str(s["job_id"]), state.state))
    return out


def cancel_command(jobs: Sequence[ActiveJob]) -> str:
    """The shell command that cancels these jobs (scancel of their arrays; SIGINT to local controllers)."""
    parts = [BACKENDS[kind]().cancel_command(ids) for kind, ids in _units(jobs).items()]
    return "; ".join(p for p in parts if p)


def _units(jobs: Sequence[ActiveJob]) -> dict[str, list[str]]:
    """{executor kind: what its cancel calls name (arrays, local pids)}, in the registry's order."""
    units = {kind: sorted({j.array for j in jobs if j.executor == kind}, key=lambda i: (len(i), i))
             for kind in BACKENDS}
    return {kind: ids for kind, ids in units.items() if ids}


def orphans(pipeline: Pipeline, active: Sequence[ActiveJob] | None = None) -> list[ActiveJob]:
    """Jobs the scheduler still runs for run folders that the current plan no longer has (the spec
    was edited: another learning rate, grid, model...)."""
    planned = {u.run_dir for _, units in pipeline.planned() for u in units}
    jobs = active_jobs(pipeline.exp) if active is None else active
    return [j for j in jobs if j.run_dir not in planned]


def orphan_lines(pipeline: Pipeline, active: Sequence[ActiveJob] | None = None) -> list[str]:
    found = orphans(pipeline, active)
    if not found:
        return []
    lines = [f"[orphans] {len(found)} job(s) still run for run folders the current spec no longer plans "
             "(the spec was edited); they are not waited for. Cancel them with:", f"    {cancel_command(found)}"]
    lines += [f"    {j.stage} {j.run_dir.relative_to(pipeline.exp)}: job {j.job_id} ({j.executor}, {j.state})"
              for j in found]
    return lines


# ------------------------------------------------------------------ logs and progress


def log_files(exp: Path, run_dir: Path) -> list[Path]:
    """stdout and stderr files of a run's last job (submitit's names), those that exist."""
    sub = read_submission(run_dir)
    backend = BACKENDS.get(sub["executor"]) if sub else None
    if backend is None or not backend.writes_logs:
        return []
    paths = JobPaths(exp / "logs" / str(sub.get("stage", "")), job_id=str(sub["job_id"]), task_id=0)
    return [p for p in (paths.stdout, paths.stderr) if p.is_file()]


def tail(path: Path, n: int = TAIL_LINES) -> list[str]:
    """The last n lines of a file (a bar's carriage returns keep only their last state)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 64 * 1024))
        text = f.read().decode(errors="replace")
    return [line.rsplit("\r", 1)[-1] for line in text.splitlines()[-n:]]


def training_progress(run_dir: Path, batch_size: int) -> str:
    """`epoch 3/8, step 1200/3000, last val/acc 0.4123, 512 img/s, ~3 min left` for a running training,
    from its progress.json (written by the job every progress interval) or its metrics.jsonl."""
    try:
        prog = read_json(run_dir / PROGRESS) or {}
    except CorruptFileError:
        prog = {}
    try:
        records = read_jsonl(run_dir / METRICS)  # skips a line being written
    except CorruptFileError:
        records = []
    last: dict = records[-1] if records else {}
    if not prog and not last:
        return "starting (no step recorded yet)"
    step, total = prog.get("step", last.get("step")), prog.get("total_steps")
    val_acc = prog.get("val/acc", last.get("val/acc"))
    rate = prog.get("images_per_s") or last.get("images_per_s")
    parts = [f"epoch {prog.get('epoch', last.get('epoch'))}/{prog.get('num_epochs', '?')}",
             f"step {step}/{total if total else '?'}",
             "last val/acc " + (f"{val_acc:.4f}" if isinstance(val_acc, (int, float)) else "-")]
    if rate:
        parts.append(f"{rate:.0f} img/s")
    if rate and total and step is not None:
        left = (total - step) * batch_size / rate
        parts.append(f"~{_duration(left)} left")
    if prog.get("time"):
        parts.append(f"updated {_duration(time.time() - prog['time'])} ago")
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


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
                                                 f"none (see {u.run_dir / 'error.json'})"))
            elif s.state == "running" and stage.name == "train":
                lines.append(f"    running: {u.label} (job {s.job_id}): "
                             f"{training_progress(u.run_dir, u.payload.config.batch_size)}")
    lines += driver.status_lines(pipeline.exp, tail)
    lines += orphan_lines(pipeline)
    return lines


def find_units(pipeline: Pipeline, key: str) -> list[Unit]:
    """The planned runs a --logs argument names: a label exactly, else a run folder name prefix."""
    units = [u for _, stage_units in pipeline.planned() for u in stage_units]
    exact = [u for u in units if u.label == key]
    return exact or [u for u in units if key and u.run_dir.name.startswith(key)]


def logs_lines(pipeline: Pipeline, key: str, n: int = TAIL_LINES) -> list[str]:
    """Paths and tails of one run's stdout/stderr (or the driver's log for `driver`). ValueError when
    `key` names no run or several."""
    if key == "driver":
        return driver.logs_lines(pipeline.exp, n, tail)
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
    for _ in range(CANCEL_ROUNDS):
        jobs = active_jobs(exp)
        units = {(j.executor, j.array) for j in jobs}
        skip = units | _done_units(exp)
        found = {(kind, BACKENDS[kind]().cancel_unit(r.job_id)): r for kind in _kinds(pipeline)
                 for r in BACKENDS[kind]().queued(exp / "logs")
                 if (kind, BACKENDS[kind]().cancel_unit(r.job_id)) not in skip}
        if not jobs and not found:
            break
        for kind in BACKENDS:
            refs = [JobRef.from_submission(read_submission(j.run_dir) or {"job_id": j.job_id})
                    for j in jobs if j.executor == kind] + [r for (k, _), r in found.items() if k == kind]
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
    if (cancelled or strays) and active_jobs(exp):
        lines.append("the scheduler still lists jobs of this experiment; run --cancel again, or: "
                         + cancel_command(active_jobs(exp)))
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
    for d in run_folders(exp):
        sub = read_submission(d)
        if sub and sub["executor"] in BACKENDS and read_result(d) is not None:
            out.add((str(sub["executor"]), BACKENDS[sub["executor"]]().cancel_unit(str(sub["job_id"]))))
    return out


def _kinds(pipeline: Pipeline) -> list[str]:
    """The backends that may hold jobs of the experiment: the pipeline's, and those its run folders name."""
    kinds = {pipeline.kind} | {str(s["executor"]) for d in run_folders(pipeline.exp) if (s := read_submission(d))}
    return [k for k in BACKENDS if k in kinds and (k == "local" or BACKENDS[k].available())]
