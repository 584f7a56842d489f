"""`python -m sweeps.launch`: usage errors (exit 2, one line), --dry-run, --status, --report, a busy experiment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from filelock import FileLock
from helpers import Launch, wait_until

from cluster.backends.local import LOCAL_CONTROLLER, local_controller_alive
from cluster.submission import Submission
from core.runs import record_submission
from results import table
from sweeps import launch

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """The launcher as a user runs it (a fresh interpreter)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "sweeps.launch", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run main(argv), expect exit status 2, and return its one-line message."""
    with pytest.raises(SystemExit) as exc:
        launch.main(argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m sweeps.launch: error: "), captured.err
    return lines[0]


@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    real = Submission.submit

    def submit(self: Submission, jobs: Any, **kwargs: Any) -> Any:
        calls.append([call for call, _ in jobs])
        return real(self, jobs, **kwargs)

    monkeypatch.setattr(Submission, "submit", submit)
    return calls


@pytest.fixture
def finished(smoke_experiment: tuple[Path, Launch]) -> Path:
    """`python -m sweeps.launch smoke --executor debug --out OUT`, run once per session (conftest.py):
    OUT/smoke. Read it only."""
    exp, launched = smoke_experiment
    assert launched.rc == 0, "\n".join(launched.lines)
    return exp


@pytest.fixture
def copy(smoke_copy: Path) -> Path:
    """A private copy of the finished experiment; `--out` is its parent."""
    return smoke_copy


# ------------------------------------------------------------------ usage errors


def test_an_unknown_sweep_lists_the_available_ones() -> None:
    proc = cli("nope", "--dry-run")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "python -m sweeps.launch: error: unknown sweep 'nope'; available: architectures, dcnn, demo, "
        "flanker-training, pooling, similarity, smoke, or a file path/to/sweep.py, or a module package.module (see --help)"]
    assert proc.stdout == ""


def test_no_sweep_lists_the_available_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert ("no sweep given; available: architectures, dcnn, demo, flanker-training, pooling, similarity, smoke"
            in usage_error(["--dry-run"], capsys))


def test_an_invalid_value_exits_2_without_a_traceback(tmp_path: Path) -> None:
    proc = cli("smoke", "--cpus", "0", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr == "python -m sweeps.launch: error: --cpus must be >= 1, got 0 (see --help)\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "message"), [
    (["--executor", "nope"], "argument --executor: invalid choice: 'nope' (choose from 'auto', 'slurm', 'local', 'debug')"),
    (["--cpus", "0"], "--cpus must be >= 1, got 0"),
    (["--cpus", "two"], "value: 'two'"),  # "invalid conv value": core.cli's optional wrapper lends argparse its name
    (["--gpus", "-1"], "--gpus must be >= 0, got -1"),
    (["--mem", "0"], "--mem must be > 0 GB, got 0.0"),
    (["--time", "0"], "--time must be >= 1, got 0"),
    (["--array-parallelism", "0"], "--array-parallelism must be >= 1, got 0"),
    (["--conditions-per-job", "-1"], "--conditions-per-job must be >= 1 (or 0 for the sweep's), got -1"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["--retry-failed", "maybe"], "'maybe' is not a boolean; use true or false"),
    (["--sbatch", "time=5"], "extra_sbatch item 'time=5' sets 'time', which time_min sets"),
    (["--partition", "a b"], "partition 'a b' must be a partition name without spaces"),
    (["--status", "--dry-run"], "use at most one of --status, --dry-run, --report"),
])
def test_invalid_options_exit_2_naming_the_value(args: list[str], message: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert message in usage_error(["smoke", *args, "--out", str(tmp_path / "out")], capsys)
    assert not (tmp_path / "out").exists()


def test_an_unwritable_out_exits_2_with_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    line = usage_error(["smoke", "--executor", "debug", "--out", str(a_file)], capsys)
    assert f"output folder {a_file}/smoke is not writable (Not a directory); choose another with --out" in line
    if os.geteuid() != 0:  # root writes anywhere: only a non-root user sees a read-only folder refused
        read_only = tmp_path / "read-only"
        read_only.mkdir(mode=0o500)
        line = usage_error(["smoke", "--executor", "debug", "--out", str(read_only)], capsys)
        assert f"output folder {read_only}/smoke is not writable" in line


def test_help_lists_every_option() -> None:
    proc = cli("--help")
    assert proc.returncode == 0
    for flag in ("--quick", "--executor", "--out", "--status", "--dry-run", "--report", "--retry-failed",
                 "--conditions-per-job", "--device", "--partition", "--gpus", "--cpus", "--mem", "--time",
                 "--array-parallelism", "--sbatch", "--verbose"):
        assert flag in proc.stdout, flag


# ------------------------------------------------------------------ --dry-run


def test_dry_run_of_the_demo_prints_the_plan_and_writes_nothing(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert launch.main(["demo", "--dry-run", "--executor", "local", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert not out.exists()
    assert f"experiment folder: {out / 'demo'}" in lines and "executor: local" in lines
    assert "[datasets] 2 datasets (built once each, under a lock):" in lines
    assert "[train] 6 jobs (2 models x 3 learning rates [0.1, 0.01, 0.001]):" in lines
    assert sum(line.startswith("    11-1-1-1-1_total_pool_contrast_") for line in lines) == 6
    for contrast in ("areafactor", "None"):
        assert (f"[eval] 11-1-1-1-1_total_pool_contrast_{contrast}: 154 conditions of the 336-point grid "
                "(dropped 63 invalid, 119 duplicates): a 14, ax 49, xa 42, xax 49") in lines
    assert ("[eval] 308 conditions in total for the selected models, 8 per job -> 40 jobs, all test images each"
            in lines)
    assert lines[-3:] == [
        "[resources] datasets: partition=default gpus=0 cpus=4 mem=8GB time=60min array_parallelism=256",
        "[resources] train: partition=default gpus=1 cpus=8 mem=16GB time=360min array_parallelism=256",
        "[resources] eval: partition=default gpus=1 cpus=4 mem=8GB time=60min array_parallelism=256"]


def test_dry_run_shows_the_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["demo", "--dry-run", "--executor", "slurm", "--out", str(tmp_path / "out"), "--conditions-per-job", "5",
            "--partition", "gpu", "--cpus", "3", "--gpus", "2", "--mem", "12", "--time", "30",
            "--array-parallelism", "7", "--sbatch", "qos=high"]
    assert launch.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "executor: slurm" in lines
    assert "[eval] 308 conditions in total for the selected models, 5 per job -> 62 jobs, all test images each" in lines
    assert lines[-3:] == [
        "[resources] datasets: partition=gpu gpus=0 cpus=4 mem=8GB time=30min array_parallelism=7 extra=qos=high",
        "[resources] train: partition=gpu gpus=2 cpus=3 mem=12.0GB time=30min array_parallelism=7 extra=qos=high",
        "[resources] eval: partition=gpu gpus=2 cpus=3 mem=12.0GB time=30min array_parallelism=7 extra=qos=high"]
    assert not (tmp_path / "out").exists()


def test_the_quick_demo_plan(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert launch.main(["demo", "--quick", "--dry-run", "--executor", "local", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"experiment folder: {tmp_path / 'demo-quick'}" in out and "400 test images each" in out


# ------------------------------------------------------------------ --status


def test_status_of_an_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nothing-here"
    assert launch.main(["smoke", "--status", "--executor", "debug", "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "datasets    2 jobs: 2 missing", "train       4 jobs: 4 missing", "eval        0 jobs: none"]
    assert not out.exists()


def test_status_of_a_finished_experiment(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert launch.main(["smoke", "--status", "--executor", "debug", "--out", str(finished.parent)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "datasets    2 jobs: 2 done", "train       4 jobs: 4 done", "eval       24 jobs: 24 done"]


def test_status_lists_failures_and_lost_results(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = json.loads((copy / "plan.json").read_text())
    failed, lost = (copy / e["dir"] for e in plan["eval"][:2])
    (failed / "result.json").unlink()
    (failed / "error.json").write_text(json.dumps({"type": "ValueError", "message": "bad\nthe last line"}))
    (lost / "result.json").unlink()
    assert launch.main(["smoke", "--status", "--executor", "debug", "--out", str(copy.parent)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "eval       24 jobs: 22 done, 1 failed, 1 missing"
    assert len(lines) == 5 and lines[3].startswith("    failed: ")
    assert lines[3].endswith(": ValueError: the last line")
    assert lines[4] == f"        logs: none (see {failed / 'error.json'})"  # debug jobs have no log files


# ------------------------------------------------------------------ --report


def test_report_redraws_the_table_and_figures_and_submits_nothing(copy: Path, submitted: list[Any],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    before = table.load(copy)
    shutil.rmtree(copy / "figures")
    for name in ("results.parquet", "results.csv", "selection.csv"):
        (copy / name).unlink()
    assert launch.main(["smoke", "--report", "--executor", "debug", "--out", str(copy.parent)]) == 0
    assert submitted == []
    out = capsys.readouterr().out
    assert "[collect] results table: 24/24 conditions done" in out
    after = table.load(copy)
    pd.testing.assert_frame_equal(after, before)
    assert (copy / "results.csv").is_file() and (copy / "selection.csv").is_file()
    assert len(list((copy / "figures").glob("*/*.png"))) >= 12 and (copy / "figures" / "stimuli.pdf").is_file()


def test_report_of_an_empty_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = usage_error(["smoke", "--report", "--out", str(tmp_path / "out")], capsys)
    assert f"nothing to report in {tmp_path / 'out' / 'smoke'} (no plan.json)" in line
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ one launcher per experiment


def test_a_second_launcher_exits_3_naming_the_first(copy: Path, submitted: list[Any],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (copy / "launch.json").write_text(json.dumps({"pid": 4242, "host": "elsewhere", "started": "today",
                                                  "command": "python -m sweeps.launch smoke"}))
    with FileLock(str(copy / "launch.lock")):
        assert launch.main(["smoke", "--executor", "debug", "--out", str(copy.parent)]) == 3
    err = capsys.readouterr().err
    assert "experiment 'smoke' is already being run by pid 4242 on elsewhere since today" in err
    assert submitted == []


def test_a_launch_lists_orphaned_jobs_with_the_command_to_cancel_them(copy: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A job still running for a run folder that the spec no longer plans (it was edited)."""
    orphan = copy / "train" / "0123456789ab"
    orphan.mkdir()
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", LOCAL_CONTROLLER])
    try:
        wait_until(lambda: local_controller_alive(job.pid), 30, "the stand-in job")
        record_submission(orphan, executor="local", job_id=str(job.pid), stage="train")
        assert launch.main(["smoke", "--executor", "debug", "--out", str(copy.parent)]) == 0
        out = capsys.readouterr().out.splitlines()
        i = out.index("[orphans] 1 job(s) still run for run folders the current spec no longer plans (the spec "
                      "was edited); they are not waited for. Cancel them with:")
        assert out[i + 1] == f"    kill -INT {job.pid}"
        assert job.poll() is None  # listed, not touched
    finally:
        job.kill()
        job.wait()
