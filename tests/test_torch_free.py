"""The read side loads no torch: the tables (`import results.table`) and `--status` learn a label, a
condition or a file name from ecc.conditions, ecc.geometry and ecc.dataset_spec, never from the
model code. Each runs in a fresh interpreter under `python -X importtime`, which lists every module
it imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from core.runs import record_submission

ROOT = Path(__file__).resolve().parents[1]


def imported(*args: str, cwd: Path = ROOT) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `python -X importtime ARGS`; the process and the top-level packages it imported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return proc, names


def test_the_results_tables_import_no_torch() -> None:
    proc, names = imported("-c", "import results.table, results.findings, results.stats")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "results" in names and "pandas" in names  # the listing works
    assert "torch" not in names


def test_status_imports_no_torch(tmp_path: Path) -> None:
    from sweeps import smoke
    from sweeps.pipeline import Pipeline

    # An experiment folder with a run in it: a training that failed (what --status reads and prints).
    unit = Pipeline(smoke.sweep(), tmp_path / "smoke", executor="local", echo=lambda _: None).train.units()[0]
    unit.run_dir.mkdir(parents=True)
    record_submission(unit.run_dir, executor="local", job_id="4242", stage="train")
    (unit.run_dir / "error.json").write_text(json.dumps({"type": "ValueError", "message": "boom",
                                                         "time": time.time()}))
    proc, names = imported("-m", "sweeps.launch", "smoke", "--status", "--executor", "local",
                           "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"failed: {unit.label}: ValueError: boom" in proc.stdout and "sweeps" in names
    assert "torch" not in names
