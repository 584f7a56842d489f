"""The smoke sweep on the real SLURM cluster: `python -m sweeps.launch smoke --executor slurm` end to end,
one array job per stage (checked in sacct), the results table, --status, and a relaunch that submits nothing."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from results import table
from sweeps import smoke

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

STAGES = {"datasets": 2, "train": 4, "eval": 6}  # jobs per stage of the smoke sweep (24 conditions, 4 per job)


def launcher(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The launcher in its own process, so that the jobs run in SLURM's processes, not in pytest's."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "sweeps.launch", "smoke", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def stage_jobs(exp: Path) -> dict[str, set[str]]:
    """Per stage, the array job ids (before the '_') recorded in the run folders' submission.json."""
    out: dict[str, set[str]] = {}
    for path in exp.glob("**/submission.json"):
        sub = json.loads(path.read_text())
        assert sub["executor"] == "slurm", sub
        out.setdefault(sub["stage"], set()).add(str(sub["job_id"]).split("_")[0])
    return out


def sacct(job_ids: list[str], since: str) -> list[tuple[str, str, str]]:
    """(task id, job name, state) of these array jobs, submitted since `since`: job ids restart with a
    fresh cluster state while the accounting database keeps older jobs, so the time window matters."""
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-o", "JobID,JobName,State", "-S", since,
                          "-j", ",".join(job_ids)], capture_output=True, text=True, check=True).stdout
    return [tuple(line.split("|")) for line in out.splitlines() if line.strip()]  # type: ignore[misc]


def now(before_s: float = 5) -> str:
    return (datetime.datetime.now() - datetime.timedelta(seconds=before_s)).strftime("%Y-%m-%dT%H:%M:%S")


def wait_for_sacct(job_ids: list[str], since: str, n: int) -> list[tuple[str, str, str]]:
    """sacct's rows once it lists n tasks in final states (accounting lags the scheduler a little)."""
    rows: list[tuple[str, str, str]] = []
    deadline = time.time() + 30
    while time.time() < deadline:
        rows = sacct(job_ids, since)
        if len(rows) == n and all(state in ("COMPLETED", "FAILED") for *_, state in rows):
            break
        time.sleep(1)
    return rows


@dataclass
class Finished:
    out: Path           # --out
    since: str          # sacct window start
    stdout: list[str]
    seconds: float


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Finished:
    """`python -m sweeps.launch smoke --executor slurm --out OUT`, run once for this module."""
    out = tmp_path_factory.mktemp("slurm")
    since, t0 = now(), time.time()
    proc = launcher("--executor", "slurm", "--out", str(out), cwd=out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return Finished(out, since, proc.stdout.splitlines(), time.time() - t0)


def test_the_smoke_sweep_on_slurm(finished: Finished) -> None:
    tmp_path, since, out, t0 = finished.out, finished.since, finished.stdout, time.time()
    for stage, n in STAGES.items():
        runs = {"datasets": 2, "train": 4, "eval": 24}[stage]
        assert any(line.startswith(f"[{stage}] submitting {n} job(s) for {runs} run(s) as one array (slurm, ")
                   for line in out), out
        assert f"[{stage}] {runs} jobs: {runs} done" in out
    exp = tmp_path / "smoke"

    # each stage was ONE array job, named <sweep>-<stage>, every task of it completed
    jobs = stage_jobs(exp)
    assert set(jobs) == set(STAGES) and all(len(ids) == 1 for ids in jobs.values()), jobs
    rows = wait_for_sacct([next(iter(ids)) for ids in jobs.values()], since, sum(STAGES.values()))
    for stage, n in STAGES.items():
        (base,) = jobs[stage]
        tasks = sorted((job_id, name, state) for job_id, name, state in rows if job_id.split("_")[0] == base)
        assert tasks == [(f"{base}_{i}", f"smoke-{stage}", "COMPLETED") for i in range(n)], rows

    # the results table: one done row per valid condition per model
    df = table.load(exp)
    spec = smoke.sweep()
    assert len(df) == sum(len(spec.conditions(name)[0]) for name, _ in spec.models) == 24
    assert set(df["state"]) == {"done"} and set(df["n_images"]) == {spec.grid.test_images}
    (eval_job,) = jobs["eval"]
    assert {j.split("_")[0] for j in df["job_id"]} == {eval_job}
    assert len(set(df["job_id"])) == STAGES["eval"]
    assert (exp / "figures" / "stimuli.png").is_file()

    status = launcher("--status", "--executor", "slurm", "--out", str(tmp_path), cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines() == [
        "datasets    2 jobs: 2 done", "train       4 jobs: 4 done", "eval       24 jobs: 24 done"]

    before = {p: p.read_text() for p in exp.glob("**/submission.json")}
    again = launcher("--executor", "slurm", "--out", str(tmp_path), cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert not [line for line in again.stdout.splitlines() if "submitting" in line]
    assert {p: p.read_text() for p in exp.glob("**/submission.json")} == before
    print(f"smoke sweep on SLURM: {finished.seconds:.0f} s; status and relaunch {time.time() - t0:.0f} s")


def test_a_job_that_raises_on_slurm_gives_failed_rows(finished: Finished, tmp_path: Path) -> None:
    exp = tmp_path / "smoke"
    shutil.copytree(finished.out / "smoke", exp, ignore=shutil.ignore_patterns("*.lock"))
    shutil.rmtree(exp / "eval")
    selection = json.loads((exp / "selection.json").read_text())["models"]
    broken, whole = selection[0], selection[1]
    (exp / "train" / broken["chosen"] / "checkpoint.pt").unlink()  # its eval jobs raise: no weights
    since = now()
    proc = launcher("--executor", "slurm", "--out", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[eval] 24 jobs: 12 done, 12 failed" in proc.stdout.splitlines()

    df = table.load(exp)
    assert len(df) == 24
    assert set(df[df["model"] == whole["model"]]["state"]) == {"done"}
    failed = df[df["model"] == broken["model"]]
    assert len(failed) == 12 and set(failed["state"]) == {"failed"}
    (error,) = set(failed["error"])
    assert error.startswith("FileNotFoundError: ") and error.endswith("checkpoint.pt does not exist: the run has no weights")
    error_json = json.loads((exp / failed["run_dir"].iloc[0] / "error.json").read_text())
    assert error_json["type"] == "FileNotFoundError" and "Traceback" in error_json["traceback"]

    (eval_job,) = stage_jobs(exp)["eval"]  # still one array: 3 jobs per model, the broken model's failed
    rows = wait_for_sacct([eval_job], since, STAGES["eval"])
    assert sorted(state for *_, state in rows) == ["COMPLETED"] * 3 + ["FAILED"] * 3, rows
