"""What a detached driver job runs: `python -m sweeps.detached DRIVER_JSON ARGV`, the launcher with
ARGV, then its exit status into DRIVER_JSON (unless a later --detach has replaced the record), so
that --status tells a clean end (ENDED, FAILED) from a killed driver (sweeps/driver.py)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cluster.backends import BACKENDS
from core.atomic import CorruptFileError, atomic_write_json, read_json
from core.runs import JobRef

from .launch import main


def run(record: str, argv: Sequence[str]) -> int:
    code = main(list(argv))
    path = Path(record)
    try:
        rec = read_json(path)
    except CorruptFileError:
        return code
    if rec is not None and rec.get("executor") in BACKENDS and \
            BACKENDS[rec["executor"]]().current(JobRef.from_submission(rec)):
        atomic_write_json(path, {**rec, "ended": time.strftime("%Y-%m-%d %H:%M:%S"), "exit": code})
    return code


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(run(sys.argv[1], sys.argv[2:]))
