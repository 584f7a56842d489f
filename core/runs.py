"""Run folders: one per job, named by its config hash; their files say what state the job is in.

A run folder holds (its file names: core.layout)
  config.json      what the job computes (written before submission)
  submission.json  how it was last submitted: executor, job id, time (written at submission)
  result.json      the job's structured result (written atomically by the job when it succeeds)
  error.json       the last failure: type, message, traceback or scheduler state
A job is done exactly when result.json exists, is valid JSON, holds the keys its kind requires
(DONE_KEYS) with values its kind's validator accepts (VALIDATORS: numbers where numbers belong, the
folder's config.json present and naming the same run, an evaluation's per-image record whole);
nothing else is ever taken for a result. This is the one definition of "done": the launcher, the
jobs, --status and the results table all ask `read_result` / `run_state`. A result.json that does
not count is the run's failure (its reason in the error), so a relaunch runs it again.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import CorruptFileError, atomic_write_json, check_keys, read_json
from .hits import read_hits
from .identity import to_jsonable
from .layout import CONFIG, ERROR, RESULT, SUBMISSION

logger = logging.getLogger(__name__)


# The keys a result.json of each kind must hold to count as done (a result of another kind, e.g. a
# test's job body, needs none beyond being a JSON object).
DONE_KEYS: dict[str, tuple[str, ...]] = {
    "dataset": ("key", "n"),
    "train": ("hash", "final"),
    "eval": ("n_images", "n_correct", "accuracy"),
}


STATES = ("done", "failed", "running", "pending", "missing")
CANCELLED = "Cancelled"  # error.json type of a run whose job a user cancelled (--cancel): resubmitted on relaunch
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*\Z")  # 123, 123_4, a local pid, DEBUG_140..., pid-42

# What a scheduler says of a job, in our words: each backend maps its scheduler's names onto these
# (cluster/backends/), and nothing above the backends knows sacct's or /proc's vocabulary.
JOB_STATES = ("pending", "running", "completed", "failed", "cancelled")


@dataclass(frozen=True)
class JobState:
    """A job as its scheduler sees it: one of JOB_STATES, and the scheduler's own name for it (TIMEOUT,
    OUT_OF_MEMORY, NODE_FAIL...: a failed job's reason, for messages)."""

    state: str
    name: str = ""

    def __post_init__(self) -> None:
        if self.state not in JOB_STATES:
            raise ValueError(f"job state {self.state!r} is not one of {', '.join(JOB_STATES)}")

    @property
    def active(self) -> bool:
        """Queued or running: the job may still write its runs' results."""
        return self.state in ("pending", "running")

    def __str__(self) -> str:
        return self.name or self.state.upper()


@dataclass(frozen=True)
class RunState:
    state: str            # one of STATES
    error: str = ""       # last line of the error, for failed runs
    job_id: str = ""      # scheduler job id of the last submission, if any
    kind: str = ""        # the error's type, for failed runs

    @property
    def cancelled(self) -> bool:
        """Failed because a user cancelled its job (not a failure of the run: a relaunch reruns it)."""
        return self.state == "failed" and self.kind == CANCELLED


def result_path(run_dir: Path) -> Path:
    return Path(run_dir) / RESULT


def read_result(run_dir: Path, kind: str | None = None) -> dict[str, Any] | None:
    """The run's result when the run is done, else None (no result.json, an unreadable one, one
    without the keys of its kind, or, when `kind` is given, a result of another kind)."""
    result, problem = _load_result(Path(run_dir), kind)
    if problem:
        logger.warning("ignoring %s", problem)
    return result


def result_problem(run_dir: Path, kind: str | None = None) -> str:
    """Why the run's result.json does not count as a result ("" when it does, or there is none)."""
    return _load_result(Path(run_dir), kind)[1]


def _load_result(run_dir: Path, kind: str | None) -> tuple[dict[str, Any] | None, str]:
    path = result_path(run_dir)
    try:
        result = read_json(path)
    except CorruptFileError as e:
        return None, f"corrupt result.json ({e})"
    if result is None:
        return None, ""
    have = result.get("kind")
    if kind is not None and have != kind:
        return None, f"corrupt result.json ({path} is a {have!r} result where a {kind!r} one belongs)"
    try:
        check_keys(path, result, DONE_KEYS.get(str(have), ()))
    except CorruptFileError as e:
        return None, f"corrupt result.json ({e})"
    if str(have) in VALIDATORS:
        problem = _config_problem(run_dir, result) or VALIDATORS[str(have)](run_dir, result)
        if problem:
            return None, f"invalid result.json: {problem}"
    return result, ""


# ----------------------------------------------------------------------------- what each kind's result must hold
def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    """A JSON number, or a non-finite float as core.identity writes it ("nan" of a diverged run)."""
    return (isinstance(x, (int, float)) and not isinstance(x, bool)) or x in ("nan", "inf", "-inf")


def _config_problem(run_dir: Path, result: Mapping[str, Any]) -> str:
    """A result counts only in a folder whose config.json says which run it is, and the same run:
    a folder deleted while its job ran comes back holding a result and nothing else."""
    try:
        config = read_json(run_dir / CONFIG)
    except CorruptFileError as e:
        return str(e)
    if config is None:
        return f"{run_dir / CONFIG} is missing (the folder was deleted or damaged after its job started)"
    if "hash" in config and "hash" in result and result["hash"] != config["hash"]:
        return f"it is the result of run {result['hash']!r}, the folder's config.json is run {config['hash']!r}"
    return ""


def _dataset_problem(run_dir: Path, result: Mapping[str, Any]) -> str:
    n = result["n"]
    return "" if _is_int(n) and n > 0 else f"n={n!r} must be a positive integer"


def _train_problem(run_dir: Path, result: Mapping[str, Any]) -> str:
    final = result["final"]
    if not isinstance(final, Mapping) or "val/acc" not in final:
        return f"final={final!r} must be a mapping holding val/acc"
    bad = {k: v for k, v in final.items() if k in TRAIN_METRICS and not _is_number(v)}
    return f"final metrics {bad} must be numbers" if bad else ""


def _eval_problem(run_dir: Path, result: Mapping[str, Any]) -> str:
    n, k, acc = result["n_images"], result["n_correct"], result["accuracy"]
    if not (_is_int(n) and _is_int(k)):
        return f"n_images={n!r}, n_correct={k!r} must be integers"
    if n <= 0 or not 0 <= k <= n:
        return f"need 0 <= n_correct ({k}) <= n_images ({n}) and n_images > 0"
    if not (_is_number(acc) and abs(float(acc) - k / n) <= 1e-3):
        return f"accuracy={acc!r} is not n_correct/n_images = {k / n:.4f}"
    per_image = result.get("per_image")
    if per_image is None:  # an evaluation that kept no record (the record is optional, a damaged one is not)
        return ""
    name = per_image.get("file") if isinstance(per_image, Mapping) else None
    if not isinstance(name, str) or not name or Path(name).name != name or per_image.get("n") != n:
        return f"per_image={per_image!r} must name a file in the run folder holding n_images={n} bits"
    try:
        hits = read_hits(run_dir / name, n)
    except (FileNotFoundError, CorruptFileError) as e:
        return f"its per-image record is not whole ({e})"
    if int(hits.sum()) != k:
        return f"its per-image record {run_dir / name} counts {int(hits.sum())} right, n_correct is {k}"
    return ""


TRAIN_METRICS = ("train/loss", "train/acc", "val/loss", "val/acc")
# Beyond its DONE_KEYS, what a result of each kind must satisfy (the reason it does not, "" if it does).
VALIDATORS: dict[str, Callable[[Path, Mapping[str, Any]], str]] = {
    "dataset": _dataset_problem,
    "train": _train_problem,
    "eval": _eval_problem,
}


def write_config(run_dir: Path, kind: str, run_hash: str, config: Any, **extra: Any) -> None:
    """Write the run's config.json, `{"kind", "hash", "config", **extra}` (the one schema, written by
    the launcher before submission and by a job that starts on a folder without one).

    A folder holding another run (another hash) is refused, naming both; the same run keeps what
    an earlier writer added (e.g. the launcher's model name) and gains what this one adds."""
    path = Path(run_dir) / CONFIG
    want = to_jsonable({"kind": kind, "hash": run_hash, "config": config, **extra})
    have = read_json(path)  # raises CorruptFileError when unreadable: never overwrite it silently
    if have is not None:
        # A config.json written without a hash (launchers before the one schema) is compared by config.
        same = have["hash"] == run_hash if "hash" in have else have.get("config") == want["config"]
        if not same:
            raise ValueError(f"{run_dir} holds another run (config hash {have.get('hash')!r}, this one is "
                             f"{run_hash}); use another folder")
        want = {**have, **want}
        if want == have:
            return
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, want)


def write_result(run_dir: Path, result: Mapping[str, Any]) -> None:
    """Atomically write the result and clear any error left by an earlier attempt."""
    atomic_write_json(Path(run_dir) / RESULT, dict(result))
    (Path(run_dir) / ERROR).unlink(missing_ok=True)


def write_error(run_dir: Path, exc: BaseException | None = None, *, message: str = "", kind: str = "") -> None:
    """Record a failure (an exception in the job, or a scheduler state seen by the launcher)."""
    payload = {
        "type": kind or (type(exc).__name__ if exc is not None else "Error"),
        "message": message or (str(exc) if exc is not None else ""),
        "traceback": "".join(traceback.format_exception(exc)) if exc is not None else "",
        "host": socket.gethostname(),
        "time": time.time(),
    }
    atomic_write_json(Path(run_dir) / ERROR, payload)


def read_error(run_dir: Path) -> dict[str, Any] | None:
    try:
        return read_json(Path(run_dir) / ERROR)
    except CorruptFileError as e:
        return {"type": "CorruptFileError", "message": str(e)}


@dataclass(frozen=True)
class JobRef:
    """A submitted job as its runs' submission.json records it: enough to find it again, and to tell
    it from another job that got the same id later (a local job's pid is reused)."""

    job_id: str
    folder: str = ""  # the executor's folder (logs/<stage>, absolute): the job's submitit files
    token: str = ""   # what else the job must match (local: its process's start time); "" = not recorded

    @classmethod
    def of(cls, job: JobRef | str) -> JobRef:
        """A JobRef, or a bare job id taken as one (nothing else to match)."""
        return job if isinstance(job, JobRef) else cls(str(job))

    @classmethod
    def from_submission(cls, sub: Mapping[str, Any]) -> JobRef:
        return cls(str(sub["job_id"]), str(sub.get("folder", "")), str(sub.get("token", "")))


def error_since(run_dir: Path, since: float) -> dict[str, Any] | None:
    """The run's error.json when it was written at or after `since` (so it is about what began then:
    an attempt, a submission); None otherwise. The one freshness rule of an error."""
    error = read_error(run_dir)
    return error if error is not None and float(error.get("time", 0)) >= since else None


def submission_error(run_dir: Path) -> dict[str, Any] | None:
    """The error written since the run's last submission (about that job); with no submission.json,
    whatever error there is."""
    sub = read_submission(run_dir)
    return error_since(run_dir, float(sub.get("time", 0)) if sub else 0.0)


def record_submission(run_dir: Path, *, executor: str, job_id: str, stage: str, folder: str = "",
                      token: str = "") -> None:
    """Record how the run was last submitted (`folder`, `token`: see JobRef)."""
    atomic_write_json(Path(run_dir) / SUBMISSION, {
        "executor": executor, "job_id": str(job_id), "stage": stage, "time": time.time(),
        "host": socket.gethostname(), "pid": os.getpid(), "folder": str(folder), "token": str(token)})


def read_submission(run_dir: Path) -> dict[str, Any] | None:
    """submission.json, or None when it is missing, unreadable or names no plausible job: a job id
    becomes part of file names (submitit's logs/<stage>/<id>_result.pkl), so one with a path
    separator or `..` is refused rather than followed out of the logs folder."""
    try:
        sub = read_json(Path(run_dir) / SUBMISSION, ("executor", "job_id"))
    except CorruptFileError:
        return None
    if sub is not None and not JOB_ID.match(str(sub["job_id"])):
        logger.warning("ignoring %s: job id %r is not a scheduler job id", Path(run_dir) / SUBMISSION, sub["job_id"])
        return None
    return sub


def error_line(error: Mapping[str, Any] | None) -> str:
    """The one line that says why a run failed."""
    if not error:
        return ""
    message = str(error.get("message", "")).strip().splitlines()
    return f"{error.get('type', 'Error')}: {message[-1] if message else ''}".rstrip(": ")


def run_state(run_dir: Path, scheduler: Mapping[str, JobState] | None = None, kind: str | None = None) -> RunState:
    """State of one run from its folder, plus the scheduler's view of its last job when known.

    `scheduler` maps job ids to their JobState (cluster.submission.scheduler_states)."""
    run_dir = Path(run_dir)
    result, problem = _load_result(run_dir, kind)
    if result is not None:
        return RunState("done")
    sub = read_submission(run_dir)
    job_id = str(sub["job_id"]) if sub else ""
    sched = (scheduler or {}).get(job_id) if job_id else None
    error = read_error(run_dir)
    # An error.json from an earlier attempt does not make a requeued or resubmitted job failed.
    if sched is not None and sched.active and (error is None or submission_error(run_dir) is None):
        return RunState(sched.state, job_id=job_id)
    if error is not None:
        return RunState("failed", error_line(error), job_id, kind=str(error.get("type", "")))
    if sched is not None:
        # The job ended without a result or an error of its own: killed, out of memory, node lost...
        why = ("job ended without a result" if sched.state == "completed" else f"scheduler state {sched} and no result")
        if sched.state == "completed" and problem:
            why = problem
        return RunState("failed", why, job_id)
    if problem:  # a result.json that does not count is damage, reported (and rerun), never a quiet "missing"
        return RunState("failed", problem, job_id, kind="InvalidResult")
    if sub is not None and not sched:
        return RunState("pending" if scheduler is None else "missing", job_id=job_id)
    return RunState("missing", job_id=job_id)
