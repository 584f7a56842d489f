"""What a detached driver job runs: `python -m sweeps.detached DRIVER_JSON ARGV`, the launcher with
ARGV, then its exit status into DRIVER_JSON (unless a later --detach has replaced the record), so
that --status tells a clean end (ENDED, FAILED) from a killed driver (sweeps/driver.py)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cluster.backends import BACKENDS
from core.atomic import CorruptFileError, update_json
from core.runs import JobRef

from .launch import main


def run(record: str, argv: Sequence[str]) -> int:
    code = main(list(argv))

    def ended(rec: dict[str, Any] | None) -> dict[str, Any] | None:
        if rec is None or rec.get("executor") not in BACKENDS or \
                not BACKENDS[rec["executor"]]().current(JobRef.from_submission(rec)):
            return None  # a later --detach replaced the record: it is not ours to end
        return {**rec, "ended": time.strftime("%Y-%m-%d %H:%M:%S"), "exit": code}

    with contextlib.suppress(CorruptFileError):  # under the record's lock: a --cancel meanwhile keeps its mark
        update_json(Path(record), ended)
    return code


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(run(sys.argv[1], sys.argv[2:]))
