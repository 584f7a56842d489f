"""The experiment's cancel mark: once `--cancel` raises it, no launcher that started before submits
another job.

The mark is a counter in <experiment>/cancel.json. A launcher reads it when it takes the experiment
(`generation`), and every submission happens inside `guard(exp, generation)`, which holds
<experiment>/submit.lock across the check, the scheduler call and the writing of the runs'
submission.json. `raise_mark` takes the same lock to bump the counter. So a submission either ended,
its jobs recorded, before the mark (and --cancel finds them in the run folders), or it sees the mark
and raises `Cancelled` without calling the scheduler. No sleep, no clock comparison between hosts.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock

from .atomic import atomic_write_json, read_json
from .layout import CANCEL_JSON, SUBMIT_LOCK

LOCK_TIMEOUT_S = 300.0  # a submission holds the lock for one scheduler call (sbatch answers within 60 s)


class Cancelled(RuntimeError):
    """The experiment was cancelled (--cancel) after this launcher started: it submits nothing more."""


def read_mark(exp: str | os.PathLike) -> dict[str, Any]:
    """cancel.json ({} when the experiment was never cancelled). A damaged file raises CorruptFileError
    naming it (taking it for 'never cancelled' could let a launcher submit after a cancel)."""
    return read_json(Path(exp) / CANCEL_JSON, ("generation",)) or {}


def generation(exp: str | os.PathLike) -> int:
    """How many times the experiment was cancelled; a launcher keeps the value it started with."""
    return int(read_mark(exp).get("generation", 0))


def raise_mark(exp: str | os.PathLike, *, timeout_s: float = LOCK_TIMEOUT_S) -> dict[str, Any]:
    """Mark the experiment cancelled, after any submission in progress has recorded its jobs. Returns
    the new mark."""
    exp = Path(exp)
    exp.mkdir(parents=True, exist_ok=True)
    with FileLock(str(exp / SUBMIT_LOCK), timeout=timeout_s):
        mark = {"generation": generation(exp) + 1, "time": time.time(),
                "when": time.strftime("%Y-%m-%d %H:%M:%S"), "host": socket.gethostname(), "pid": os.getpid()}
        atomic_write_json(exp / CANCEL_JSON, mark)
    return mark


def check(exp: str | os.PathLike, started: int) -> None:
    """Raise Cancelled when the experiment was cancelled since the launcher read generation `started`
    (a check ahead of the work a submission needs; the submission itself goes through `guard`)."""
    exp = Path(exp)
    mark = read_mark(exp)
    if int(mark.get("generation", 0)) != started:
        raise Cancelled(f"experiment {exp.name!r} was cancelled (--cancel at {mark.get('when', '?')} from "
                        f"{mark.get('host', '?')}): nothing more is submitted; relaunch to resume")


@contextlib.contextmanager
def guard(exp: str | os.PathLike, started: int, *, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the submit lock around one submission; raise Cancelled, submitting nothing, when the
    experiment was cancelled since the launcher read generation `started`."""
    with FileLock(str(Path(exp) / SUBMIT_LOCK), timeout=timeout_s):
        check(exp, started)
        yield
