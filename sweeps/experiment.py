"""An experiment's records as they stand, read from its folder and one batched scheduler query: the
jobs it still has queued or running, those the plan no longer has (orphans), runs' log files and
tails, a training's progress, and the names of the experiment-level files. The launcher (write side),
--status, --logs, --cancel and the driver all read through here; nothing here writes.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from submitit.core.utils import JobPaths

from cluster.backends import BACKENDS
from cluster.submission import scheduler_states
from core.atomic import CorruptFileError, read_json, read_jsonl
from core.runs import METRICS, PROGRESS, JobRef, read_result, read_submission

LAUNCH_LOCK, LAUNCH_JSON = "launch.lock", "launch.json"  # held / written by the launcher running the experiment
TAIL_LINES = 20


# ------------------------------------------------------------------ jobs of this experiment


@dataclass(frozen=True)
class ActiveJob:
    """A run folder whose last job the scheduler still runs (or holds queued)."""

    run_dir: Path
    stage: str
    executor: str
    ref: JobRef  # as its submission.json records it
    state: str  # pending or running

    @property
    def job_id(self) -> str:
        return self.ref.job_id

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
            out.append(ActiveJob(d, str(s.get("stage", "?")), s["executor"], JobRef.from_submission(s), state.state))
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


def orphans(exp: Path, planned: Collection[Path], active: Sequence[ActiveJob] | None = None) -> list[ActiveJob]:
    """Jobs the scheduler still runs for run folders that the current plan (`planned`) no longer has
    (the spec was edited: another learning rate, grid, model...)."""
    jobs = active_jobs(exp) if active is None else active
    return [j for j in jobs if j.run_dir not in planned]


def orphan_lines(exp: Path, planned: Collection[Path], active: Sequence[ActiveJob] | None = None) -> list[str]:
    found = orphans(exp, planned, active)
    if not found:
        return []
    lines = [f"[orphans] {len(found)} job(s) still run for run folders the current spec no longer plans "
             "(the spec was edited); they are not waited for. Cancel them with:", f"    {cancel_command(found)}"]
    lines += [f"    {j.stage} {j.run_dir.relative_to(exp)}: job {j.job_id} ({j.executor}, {j.state})"
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


