"""The executors against a real SLURM controller (CI starts a one-node cluster): arrays, states, re-attach."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cloudpickle
import pytest
import submitit
from helpers import wait_until

from cluster.backends import get_backend, resolve_kind
from cluster.backends.slurm import SlurmBackend
from cluster.jobs import CheckpointableRunJob, RunJob, read_attempts
from cluster.resources import Resources
from cluster.submission import Submission, scheduler_states
from core.runs import JobState, read_error, record_submission, run_state

pytestmark = pytest.mark.slurm

# Job processes cannot import this test module: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

TINY = Resources(cpus=1, mem_gb=0.25, time_min=2)


@pytest.fixture(autouse=True)
def _fast_results(monkeypatch: pytest.MonkeyPatch) -> None:
    # submitit waits this long for a result file after a job ends (15 s by default)
    monkeypatch.setattr(submitit.SlurmJob, "_results_timeout_s", 2)


@pytest.fixture
def name() -> str:
    """A job name of our own: sacct is queried by name, since job ids restart with a fresh cluster."""
    return f"crowding-test-{uuid.uuid4().hex[:8]}"


def sacct_by_name(name: str) -> list[tuple[str, str]]:
    since = (datetime.datetime.now() - datetime.timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S")
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-o", "JobID,State", "--name", name, "-S", since],
                         capture_output=True, text=True, check=True).stdout
    return [tuple(line.split("|", 1)) for line in out.splitlines() if line.strip()]  # type: ignore[misc]


# ------------------------------------------------------------------ job bodies


def work(value: int, bad: int, seconds: float = 0.0) -> dict:
    time.sleep(seconds)
    if value == bad:
        raise ValueError(f"bad value {value}")
    return {"value": value, "env": os.environ.get("CROWDING_TEST_ENV"), "job": os.environ.get("SLURM_JOB_ID")}


def wait_for_file(path: str, value: int) -> dict:
    """Works until the test creates `path` (at most a minute)."""
    deadline = time.time() + 60
    while not Path(path).exists() and time.time() < deadline:
        time.sleep(0.1)
    return {"value": value}


def resumable(run_dir: str) -> dict:
    """First start: mark the run folder and wait for the signal; after a requeue: finish at once."""
    marker = Path(run_dir) / "first-start"
    if marker.exists():
        return {"resumed": True}
    marker.write_text("")
    time.sleep(60)
    return {"resumed": False}


# ------------------------------------------------------------------ tests


def test_auto_picks_slurm_and_sets_the_sbatch_options(tmp_path: Path) -> None:
    assert resolve_kind("auto") == "slurm"
    resources = Resources(partition="debug", cpus=2, mem_gb=1.5, time_min=30, array_parallelism=3,
                          extra_sbatch=("qos=high", "constraint=a100"))
    ex = get_backend("auto").executor(tmp_path, resources, env={"MALLOC_MMAP_MAX_": "0"}, name="crowding-train")
    assert isinstance(ex, submitit.SlurmExecutor)
    text = ex._make_submission_file_text("python -m job", "uid")
    for line in ["#SBATCH --partition=debug", "#SBATCH --cpus-per-task=2", "#SBATCH --mem=1536M",
                 "#SBATCH --time=30", "#SBATCH --job-name=crowding-train", "#SBATCH --qos=high",
                 "#SBATCH --constraint=a100", "#SBATCH --signal=USR2@120", "export MALLOC_MMAP_MAX_=0"]:
        assert line in text.splitlines(), line


def test_a_stage_is_one_array_job_and_a_failure_stays_in_its_run(tmp_path: Path, name: str) -> None:
    sub = Submission(SlurmBackend(), tmp_path / "logs", "eval", TINY, env={"CROWDING_TEST_ENV": "from launcher"},
                     name=name)
    run_dirs = [tmp_path / "runs" / f"r{i}" for i in range(4)]
    jobs = sub.submit([(RunJob(d, work, i, 2), [d]) for i, d in enumerate(run_dirs)])
    sub.wait()
    states = [run_state(d) for d in run_dirs]
    assert [s.state for s in states] == ["done", "done", "failed", "done"]
    assert states[2].error == "ValueError: bad value 2"
    assert read_error(run_dirs[2])["message"] == "bad value 2"
    results = [jobs[i].result() for i in (0, 1, 3)]
    assert [r.result["value"] for r in results] == [0, 1, 3]
    assert {r.result["env"] for r in results} == {"from launcher"}
    rows = wait_until(lambda: len(r := sacct_by_name(name)) == 4 and r, what="4 tasks in sacct")  # lags
    assert len({job_id.split("_")[0] for job_id, _ in rows}) == 1 and all("_" in j for j, _ in rows), rows
    ids = [j.job_id for j in jobs]
    final = wait_until(lambda: (s := scheduler_states(run_dirs)) and {str(v) for v in s.values()} <= {"COMPLETED", "FAILED"}
                       and len(s) == 4 and s, what="final states in sacct")
    assert [str(final[i]) for i in ids] == ["COMPLETED", "COMPLETED", "FAILED", "COMPLETED"]
    assert [final[i].state for i in ids] == ["completed", "completed", "failed", "completed"]


def test_arrays_are_chunked_by_max_array_size(tmp_path: Path, name: str) -> None:
    resources = Resources(cpus=1, mem_gb=0.25, time_min=2, array_parallelism=4)
    sub = Submission(SlurmBackend(max_array_size=2), tmp_path / "logs", "eval", resources, name=name)
    run_dirs = [tmp_path / "runs" / f"r{i}" for i in range(5)]
    jobs = sub.submit([(RunJob(d, work, i, -1), [d]) for i, d in enumerate(run_dirs)])
    sub.wait()
    assert [run_state(d).state for d in run_dirs] == ["done"] * 5
    bases = [j.job_id.split("_")[0] for j in jobs]
    assert len(set(bases)) == 3  # 2 + 2 + 1
    rows = wait_until(lambda: len(r := sacct_by_name(name)) == 5 and r, what="5 jobs in sacct")
    assert len({job_id.split("_")[0] for job_id, _ in rows}) == 3, rows
    # each chunk runs at most 4 // 3 = 1 task at once, so the stage never exceeds array_parallelism
    scripts = [(tmp_path / "logs" / f"{b}_submission.sh").read_text() for b in sorted(set(bases))[:2]]
    assert all("#SBATCH --array=0-1%1" in s for s in scripts)
    assert sub.executor.parameters["array_parallelism"] == 4


def test_states_of_running_pending_cancelled_jobs_and_reattach(tmp_path: Path, name: str) -> None:
    logs = tmp_path / "logs"
    sub = Submission(SlurmBackend(), logs, "train", TINY, name=name)
    short, long_ = tmp_path / "short", tmp_path / "long"
    go = tmp_path / "go"
    job_short = sub.submit([(RunJob(short, wait_for_file, str(go), 1), [short])])[0]
    job_long = sub.submit([(RunJob(long_, work, 2, -1, 60.0), [long_])])[0]
    later = Submission(SlurmBackend(), logs, "train", Resources(cpus=1, mem_gb=0.25, time_min=2,
                                                                extra_sbatch=("begin=now+600",)), name=name)
    waiting = tmp_path / "waiting"
    job_waiting = later.submit([(RunJob(waiting, work, 3, -1), [waiting])])[0]
    ids = [job_short.job_id, job_long.job_id, job_waiting.job_id]
    runs = [short, long_, waiting]
    try:
        states = wait_until(lambda: str((s := scheduler_states(runs)).get(ids[0])) == "RUNNING"
                            and str(s.get(ids[1])) == "RUNNING" and s, what="both jobs running")
        assert states[ids[2]] == JobState("pending", "PENDING")
        assert [run_state(d, states).state for d in (short, long_, waiting)] == ["running", "running", "pending"]

        # The launcher restarts: it has only the run folders' submission.json and the log folder.
        del sub, job_short
        again = Submission(SlurmBackend(), logs, "train", TINY, name=name)
        assert again.attach([short]) == []
        go.touch()
        (outcome,) = again.wait()
        assert outcome.result.result["value"] == 1
        assert run_state(short).state == "done"

        subprocess.run(["scancel", job_long.job_id, job_waiting.job_id], check=True)
        states = wait_until(lambda: str((s := scheduler_states(runs)).get(ids[1])) == "CANCELLED"
                            and str(s.get(ids[2])) == "CANCELLED" and s, what="cancelled in sacct")
        assert run_state(long_, states).state == "failed"
        assert "CANCELLED" in run_state(long_, states).error
        assert again.attach([long_]) == []
        again.wait()  # writes why it failed
        rs = run_state(long_)
        assert rs.state == "failed" and "has not produced any output" in rs.error
        assert read_error(long_)["type"] == "JobEndedWithoutResult"
    finally:
        subprocess.run(["scancel", *ids], check=False)


def test_usr2_requeues_a_checkpointable_run_that_then_resumes(tmp_path: Path, name: str) -> None:
    run_dir = tmp_path / "run"
    sub = Submission(SlurmBackend(), tmp_path / "logs", "train", TINY, name=name)
    (job,) = sub.submit([(CheckpointableRunJob(run_dir, resumable, str(run_dir)), [run_dir])])
    try:
        wait_until(lambda: (run_dir / "first-start").exists(), what="the first start")
        # what SLURM sends before the time limit (and on preemption): submitit calls checkpoint(), requeues
        subprocess.run(["scancel", "--signal", "USR2", job.job_id], check=True)
        wait_until(lambda: str(scheduler_states([run_dir]).get(job.job_id)) == "PENDING"
                   and (run_dir / "attempts.json").exists()
                   and read_attempts(run_dir)[0]["outcome"] == "interrupted", what="the requeue")
        # SLURM delays a requeued job's start by ~2 minutes; let it start now
        subprocess.run(["scontrol", "update", f"JobId={job.job_id}", "StartTime=now"], check=True)
        record_submission(run_dir, executor="slurm", job_id=job.job_id, stage="train")
        (outcome,) = sub.wait()
        assert outcome.result.result == {"resumed": True}
        assert [(a["attempt"], a["outcome"]) for a in read_attempts(run_dir)] == [(1, "interrupted"), (2, "done")]
    finally:
        subprocess.run(["scancel", job.job_id], check=False)


def test_squeue_answers_when_sacct_fails(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = Submission(SlurmBackend(), tmp_path / "logs", "train",
                     Resources(cpus=1, mem_gb=0.25, time_min=2, extra_sbatch=("begin=now+600",)), name=name)
    (job,) = sub.submit([(RunJob(tmp_path / "run", work, 0, -1), [tmp_path / "run"])])
    try:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "sacct").write_text("#!/bin/sh\necho 'sacct: error: accounting storage is disabled' >&2\nexit 1\n")
        (bin_dir / "sacct").chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        assert SlurmBackend().states([job.job_id, "999999"]) == {job.job_id: JobState("pending", "PENDING")}
    finally:
        subprocess.run(["scancel", job.job_id], check=False)
