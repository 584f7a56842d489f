"""--status with failed runs' log files and running trainings' progress, --logs RUN, --cancel, orphans,
--detach with the local executor, and progress lines in every job's log.

Fast tests stand in for live local jobs with real processes whose command line names submitit's
local controller (that is how the scheduler module recognises one); slow tests run the smoke sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import site_dir, wait_until

from cluster.backends.local import LOCAL_CONTROLLER, local_controller_alive
from core.runs import CANCELLED, read_error, record_submission, write_result
from sweeps import control, launch, smoke
from sweeps.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def controllers() -> Iterator[list[subprocess.Popen]]:
    """Start stand-ins for live local jobs: `fake()` returns a process whose command line names the
    local controller; all are ended after the test."""
    procs: list[subprocess.Popen] = []

    def fake() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", LOCAL_CONTROLLER])
        procs.append(proc)
        wait_until(lambda: local_controller_alive(proc.pid), 30, "the fake controller")
        return proc

    yield fake  # type: ignore[misc]
    for proc in procs:
        proc.kill()
        proc.wait()


def pipeline(out: Path) -> Pipeline:
    return Pipeline(smoke.sweep(), out / "smoke", executor="local", echo=lambda _: None)


def cli(*args: str, cwd: Path = ROOT, timeout: float = 300,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "sweeps.launch", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def status(out: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert launch.main(["smoke", "--status", "--executor", "local", "--out", str(out)]) == 0
    return capsys.readouterr().out.splitlines()


# ------------------------------------------------------------------ --status


def test_status_names_the_log_files_of_failed_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unit = pipeline(tmp_path).train.units()[0]
    unit.run_dir.mkdir(parents=True)
    record_submission(unit.run_dir, executor="local", job_id="4242", stage="train")
    (unit.run_dir / "error.json").write_text(json.dumps({"type": "ValueError", "message": "boom", "time": time.time()}))
    logs = tmp_path / "smoke" / "logs" / "train"
    logs.mkdir(parents=True)
    (logs / "4242_0_log.out").write_text("epoch 1/2 step 8: ...\n")
    (logs / "4242_0_log.err").write_text("Traceback ...\nValueError: boom\n")
    lines = status(tmp_path, capsys)
    i = lines.index(f"    failed: {unit.label}: ValueError: boom")
    assert lines[i + 1] == f"        logs: {logs / '4242_0_log.out'}, {logs / '4242_0_log.err'}"


def test_status_flags_a_finished_training_that_diverged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 21: val/acc 0.99 at epoch 1, 0.19 at the end (lr too high): --status says so."""
    p = pipeline(tmp_path)
    diverged, steady = p.train.units()[:2]
    for unit, accs in ((diverged, (0.99, 0.19)), (steady, (0.90, 0.89))):
        unit.run_dir.mkdir(parents=True)
        p.train.write_config(unit)
        (unit.run_dir / "metrics.jsonl").write_text("".join(
            json.dumps({"epoch": i + 1, "val/acc": a, "val/loss": 1.0}) + "\n" for i, a in enumerate(accs)))
        write_result(unit.run_dir, {"kind": "train", "hash": unit.run_dir.name,
                                    "final": {"val/acc": accs[-1], "val/loss": 1.0, "train/loss": 1.0, "train/acc": 0.5}})
    lines = status(tmp_path, capsys)
    assert f"    diverged: {diverged.label}: final val/acc 0.1900, best 0.9900 (more than 20 points below; " \
           "evaluation uses the final weights)" in lines, lines
    assert not any(steady.label in line and "diverged" in line for line in lines)


def test_status_shows_a_running_trainings_epoch_accuracy_and_time_left(tmp_path: Path, controllers,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    unit = pipeline(tmp_path).train.units()[1]
    unit.run_dir.mkdir(parents=True)
    job = controllers()
    record_submission(unit.run_dir, executor="local", job_id=str(job.pid), stage="train")
    (unit.run_dir / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "step": 8, "val/acc": 0.25,
                                                            "images_per_s": 500.0}) + "\n")
    # what the job's progress writes: step 12 of 16 at 64 img/s, batch 32 -> 4 steps x 32 / 64 = 2 s left
    (unit.run_dir / "progress.json").write_text(json.dumps({
        "step": 12, "total_steps": 16, "epoch": 2, "num_epochs": 2, "images_per_s": 64.0, "val/acc": 0.25,
        "time": time.time()}))
    lines = status(tmp_path, capsys)
    assert "train       4 jobs: 1 running, 3 missing" in lines
    (line,) = [line for line in lines if line.startswith("    running: ")]
    assert line.startswith(f"    running: {unit.label} (job {job.pid}): epoch 2/2, step 12/16, last val/acc 0.2500, "
                           "64 img/s, ~2 s left, updated ")


def test_training_progress_from_metrics_alone(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 3, "step": 30, "val/acc": 0.5,
                                                        "images_per_s": 100.0}) + "\n")
    assert control.training_progress(tmp_path, 32) == "epoch 3/?, step 30/?, last val/acc 0.5000, 100 img/s"
    assert control.training_progress(tmp_path / "none", 32) == "starting (no step recorded yet)"


# ------------------------------------------------------------------ --logs


@pytest.mark.slow  # a real local job and its logs: ~35 s
def test_logs_prints_the_paths_and_tails_of_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unit = pipeline(tmp_path).train.units()[0]
    unit.run_dir.mkdir(parents=True)
    record_submission(unit.run_dir, executor="slurm", job_id="77_3", stage="train")
    logs = tmp_path / "smoke" / "logs" / "train"
    logs.mkdir(parents=True)
    (logs / "77_3_0_log.out").write_text("".join(f"line {i}\n" for i in range(100)))
    (logs / "77_3_0_log.err").write_text("warning\n")
    for key in (unit.label, unit.run_dir.name[:6]):
        assert launch.main(["smoke", "--logs", key, "--executor", "local", "--out", str(tmp_path)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[1] == f"run folder: {unit.run_dir}"
        i = lines.index(f"==> {logs / '77_3_0_log.out'} (last 20 lines) <==")
        assert lines[i + 1:i + 21] == [f"line {i}" for i in range(80, 100)]
        assert lines[-2:] == [f"==> {logs / '77_3_0_log.err'} (last 20 lines) <==", "warning"]


@pytest.mark.parametrize(("key", "message"), [
    ("zzz", "no run of 'smoke' is labelled 'zzz' or has a folder starting with it"),
    ("driver", "has no driver.json: this experiment was never launched with --detach"),
])
def test_logs_of_an_unknown_run_exits_2(key: str, message: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        launch.main(["smoke", "--logs", key, "--executor", "local", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# ------------------------------------------------------------------ orphans and --cancel


def test_orphans_are_listed_with_the_command_to_cancel_them(tmp_path: Path, controllers,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    orphan = tmp_path / "smoke" / "train" / "0123456789ab"  # a run of an earlier version of the spec
    orphan.mkdir(parents=True)
    job = controllers()
    record_submission(orphan, executor="local", job_id=str(job.pid), stage="train")
    lines = status(tmp_path, capsys)
    i = lines.index("[orphans] 1 job(s) still run for run folders the current spec no longer plans (the spec "
                    "was edited); they are not waited for. Cancel them with:")
    assert lines[i + 1:i + 3] == [f"    kill -INT {job.pid}", f"    train train/0123456789ab: job {job.pid} (local, running)"]


def test_cancel_stops_every_job_records_it_and_touches_nothing_done(tmp_path: Path, controllers,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    p = pipeline(tmp_path)
    running, done, orphan = p.train.units()[0].run_dir, p.train.units()[1].run_dir, tmp_path / "smoke/eval/abc"
    jobs = {}
    for run in (running, done, orphan):
        run.mkdir(parents=True)
        jobs[run] = controllers()
        record_submission(run, executor="local", job_id=str(jobs[run].pid), stage=run.parent.name)
    p.train.write_config(p.train.units()[1])
    write_result(done, {"kind": "train", "hash": done.name, "final": {"val/acc": 1.0}})  # finished; its job has not exited yet
    assert launch.main(["smoke", "--cancel", "--executor", "local", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "cancelled 2 run(s) in 2 job(s); relaunch the same command to resubmit them"
    assert f"cancelled [train] local job {jobs[running].pid} (local): 1 run(s), running" in out
    assert f"cancelled [eval] local job {jobs[orphan].pid} (local): 1 run(s), running" in out
    for run in (running, orphan):
        assert jobs[run].wait(timeout=30) is not None
        assert read_error(run)["type"] == CANCELLED
    assert jobs[done].poll() is None and read_error(done) is None  # a done run's job is left alone
    assert "train       4 jobs: 1 done, 1 cancelled, 2 missing" in status(tmp_path, capsys)
    # a relaunch resubmits a cancelled run even when failures are kept
    states = p.states(p.train.units(), "train")
    assert states[running].cancelled
    assert launch.main(["smoke", "--cancel", "--executor", "local", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == ["no queued or running stage job to cancel"]


def test_cancelled_runs_are_resubmitted_even_when_failures_are_kept(tmp_path: Path) -> None:
    submitted = []
    p = Pipeline(smoke.sweep(), tmp_path / "smoke", executor="debug", retry_failed=False, echo=lambda _: None)
    cancelled, failed = (u.run_dir for u in p.datasets.units())
    for run, kind in ((cancelled, CANCELLED), (failed, "ValueError")):
        run.mkdir(parents=True)
        record_submission(run, executor="debug", job_id="DEBUG_1", stage="datasets")
        (run / "error.json").write_text(json.dumps({"type": kind, "message": "x", "time": time.time() + 1}))
    p._submit = lambda stage, submission, units, on_end: submitted.extend(units)  # type: ignore[method-assign]
    p.run_stage(p.datasets)
    assert [u.run_dir for u in submitted] == [cancelled]


# ------------------------------------------------------------------ --detach, local


def test_detach_with_the_debug_executor_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        launch.main(["smoke", "--detach", "--executor", "debug", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "--detach needs an executor that runs jobs on their own (slurm, local), not debug" in capsys.readouterr().err


def test_the_driver_gets_this_launchs_options() -> None:
    cfg = launch.LaunchConfig(quick=True, detach=True, retry_failed=False, cpus=2, sbatch="qos=high comment='a b'",
                              out="exps")
    assert cfg.driver_argv("smoke", "slurm") == [
        "smoke", "--quick=true", "--retry_failed=false", "--cpus=2", "--sbatch=qos=high comment='a b'",
        "--executor=slurm", f"--out={Path('exps').resolve()}"]
    res = cfg.driver_resources(smoke.sweep().resources)
    assert (res.cpus, res.gpus, res.time_min, res.extra_sbatch) == (1, 0, 4320, ("qos=high", "comment=a b"))


def _wait_driver_done(out: Path, timeout_s: float) -> list[str]:
    def done() -> list[str] | None:
        lines = cli("smoke", "--status", "--executor", "local", "--out", str(out)).stdout.splitlines()
        return lines if any(": ENDED, " in line for line in lines if line.startswith("driver ")) else None

    return wait_until(done, timeout_s, "the driver to end")


@pytest.mark.slow
def test_local_detach_cancel_and_a_detached_relaunch_that_completes(tmp_path: Path) -> None:
    few = ("--executor", "local", "--conditions-per-job", "12", "--out", str(tmp_path))
    # The training jobs are held at their start (tests' sitecustomize) so that --cancel finds them
    # running however loaded the machine is (a smoke training is over in seconds).
    gates = tmp_path / "gates"
    gates.mkdir()
    (gates / "train").touch()
    held = {"PYTHONPATH": os.pathsep.join([str(site_dir(tmp_path / "site")), str(ROOT)]),
            "CROWDING_TEST_GATES": str(gates)}
    t0 = time.time()
    proc = cli("smoke", "--detach", *few, env=held)
    assert proc.returncode == 0, proc.stderr
    exp = tmp_path / "smoke"
    driver = json.loads((exp / "driver.json").read_text())
    assert proc.stdout.startswith(f"detached: driver job {driver['job_id']} (local) runs smoke in {exp}\n")
    assert f"--out={tmp_path} --cancel" in proc.stdout
    print(f"--detach returned in {time.time() - t0:.1f} s")
    busy = cli("smoke", *few)
    assert busy.returncode == 3, busy.stdout + busy.stderr
    assert f"detached driver, job {driver['job_id']} (local, RUNNING)" in busy.stderr \
        or f"pid {driver['job_id']} on" in busy.stderr

    # --cancel mid-train: the driver and every job stopped, no process of the experiment left
    wait_until(lambda: [p for p in (exp / "train").glob("*/submission.json")  # a job started, not queued
                        if not json.loads(p.read_text())["job_id"].startswith("queued-")], 600, "training to start")
    datasets_before = {p: p.read_text() for p in (exp / "datasets" / "jobs").glob("*/submission.json")}
    proc = cli("smoke", "--cancel", *few)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"cancelled the driver: job {driver['job_id']} (local, was RUNNING)", lines
    assert lines[-1].endswith("relaunch the same command to resubmit them")
    assert not control.active_jobs(exp)
    assert not [p for p in Path("/proc").glob("[0-9]*") if str(exp) in _cmdline(p)]  # no process left
    status = cli("smoke", "--status", *few).stdout
    assert "cancelled" in status and ": CANCELLED, " in status
    (gates / "train").unlink()  # the relaunch trains for real
    log = (exp / "logs" / "driver" / "smoke-driver.log").read_text()
    assert "KeyboardInterrupt" not in log and "Traceback" not in log, log  # the controllers log elsewhere

    # relaunched detached, the driver completes in the background; nothing done was rerun
    assert cli("smoke", "--detach", *few).returncode == 0
    lines = _wait_driver_done(tmp_path, 900)
    assert lines[:3] == ["datasets    2 jobs: 2 done", "train       4 jobs: 4 done", "eval       24 jobs: 24 done"]
    assert "[collect] results table: 24/24" in (exp / "logs" / "driver" / "smoke-driver.log").read_text()
    assert {p: p.read_text() for p in (exp / "datasets" / "jobs").glob("*/submission.json")} == datasets_before
    # the driver had no terminal, yet every training job's log carries its epoch lines
    for run in (exp / "train").iterdir():
        text = control.log_files(exp, run)[0].read_text()
        assert "epoch 2/2 step 16: train/loss" in text and " img/s)" in text, text


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
