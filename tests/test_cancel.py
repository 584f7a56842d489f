"""--cancel means nothing of the experiment keeps running: the cancel mark refuses every submission
after it (and waits for one in progress to record its jobs), a launcher held just before it submits
is stopped or refused, local jobs are known by pid AND start time AND folder (a reused pid is never
taken for ours), a job that no run folder records is still found through the scheduler, queued local
runs read pending, ended jobs are reported while later ones wait for a slot, and the local driver
tells a clean end from a kill. (The SLURM twin: tests/test_slurm_workflow.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
from helpers import wait_until

from cluster.backends.local import LOCAL_CONTROLLER, LocalBackend
from cluster.jobs import RunJob
from cluster.resources import Resources
from cluster.submission import Submission, scheduler_states
from core import cancel, procs
from core.runs import CANCELLED, JobState, read_error, read_submission, record_submission, run_state
from sweeps import control, driver, launch, smoke
from sweeps.pipeline import PAUSE_ENV, Pipeline

cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROOT = Path(__file__).resolve().parents[1]


def sleeper(seconds: float) -> dict:
    time.sleep(seconds)
    return {"slept": seconds}


@pytest.fixture
def processes() -> Iterator:
    """`start(*argv_tail)`: a sleeping process whose command line ends with argv_tail; all are killed after."""
    started: list[subprocess.Popen] = []

    def start(*tail: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *tail])
        started.append(proc)
        wait_until(lambda: all(t in procs.cmdline(proc.pid) for t in tail), 30, "the stand-in process")
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def launcher(out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sweeps.launch", "smoke", "--executor", "local", "--out", str(out),
                             *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **(env or {})})


def launcher_held_before_train(out: Path) -> tuple[subprocess.Popen, Path]:
    """A local smoke launch held just before it submits its trainings (fault injection): the process
    and the folder where it wrote `held` (it goes on once `go` exists there)."""
    held = out / "held-here"
    held.mkdir()
    proc = launcher(out, env={PAUSE_ENV: f"train:{held}"})
    wait_until(lambda: (held / "held").exists() or proc.poll() is not None, 300, "the launcher to reach train")
    assert proc.poll() is None, proc.communicate()
    return proc, held


def no_process_of(exp: Path) -> bool:
    return not [pid for pid in procs.pids() if str(exp) in procs.cmdline(pid)]


# ------------------------------------------------------------------ the mark


def test_a_submission_after_the_mark_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    p = Pipeline(smoke.sweep(), tmp_path / "smoke", executor="debug", echo=lambda _: None)
    p.exp.mkdir()
    p.generation = cancel.generation(p.exp)  # as run() does when it takes the experiment
    cancel.raise_mark(p.exp)
    with pytest.raises(cancel.Cancelled, match="'smoke' was cancelled"):
        p.run_stage(p.datasets)
    assert not (p.exp / "datasets").exists() and not (p.exp / "logs").exists()
    # a launch that starts after the cancel runs as usual
    p.generation = cancel.generation(p.exp)
    assert p.run_stage(p.datasets)


def test_the_mark_waits_until_a_submission_in_progress_has_recorded_its_jobs(tmp_path: Path) -> None:
    inside, release, order = threading.Event(), threading.Event(), []

    def submitting() -> None:
        with cancel.guard(tmp_path, 0):
            inside.set()
            release.wait(30)
            order.append("recorded")

    def cancelling() -> None:
        cancel.raise_mark(tmp_path)
        order.append("marked")

    sub = threading.Thread(target=submitting)
    sub.start()
    assert inside.wait(30)
    mark = threading.Thread(target=cancelling)
    mark.start()
    mark.join(0.5)
    assert mark.is_alive() and order == []  # it cannot mark while the submission holds the lock
    release.set()
    sub.join(30)
    mark.join(30)
    assert order == ["recorded", "marked"]
    with pytest.raises(cancel.Cancelled), cancel.guard(tmp_path, 0):  # that launcher's next submission
        pass


@pytest.mark.slow
def test_a_launcher_held_before_it_submits_is_refused_once_the_mark_is_raised(tmp_path: Path) -> None:
    """A launcher --cancel cannot stop (another host) and that was about to submit: it submits nothing."""
    proc, held = launcher_held_before_train(tmp_path)
    cancel.raise_mark(tmp_path / "smoke")  # what --cancel does first
    (held / "go").touch()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert "cancelled: experiment 'smoke' was cancelled (--cancel at " in err, err
    assert "[train] submitting" not in out
    assert not list((tmp_path / "smoke" / "train").glob("*/submission.json"))


@pytest.mark.slow
def test_cancel_stops_a_foreground_launcher_held_before_it_submits(tmp_path: Path) -> None:
    proc, held = launcher_held_before_train(tmp_path)
    pid = int((held / "held").read_text().split()[0])
    done = subprocess.run([sys.executable, "-m", "sweeps.launch", "smoke", "--cancel", "--executor", "local",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith(f"stopped the launcher: pid {pid} ("), done.stdout
    out, err = proc.communicate(timeout=60)  # it was stopped by --cancel, not by the test
    assert proc.returncode in (130, -signal.SIGTERM, -signal.SIGKILL), out + err
    assert "[train] submitting" not in out
    assert not list((tmp_path / "smoke" / "train").glob("*/submission.json"))
    assert no_process_of(tmp_path / "smoke")
    # after a cancel, a relaunch proceeds (the mark only stops launchers that started before it)
    assert cancel.generation(tmp_path / "smoke") == 1


# ------------------------------------------------------------------ local jobs: identity


def test_a_reused_pid_is_not_taken_for_the_job_it_once_was(tmp_path: Path, processes) -> None:
    """Experiment B's training runs as pid P. A's submission.json names P too (pids wrap): A's --status
    must not show it running, a relaunch of A must not wait on it, and A's --cancel must not kill it."""
    b_folder = tmp_path / "B" / "logs" / "train"
    b_job = processes(LOCAL_CONTROLLER, str(b_folder))
    p = Pipeline(smoke.sweep(), tmp_path / "A", executor="local", echo=lambda _: None)
    run = p.train.units()[0].run_dir
    run.mkdir(parents=True)
    a_folder = str((p.exp / "logs" / "train").absolute())
    token = procs.start_time(b_job.pid)
    for folder, tok in ((a_folder, str(int(token) - 1)), (a_folder, token), (str(b_folder), str(int(token) - 1))):
        record_submission(run, executor="local", job_id=str(b_job.pid), stage="train", folder=folder, token=tok)
        assert run_state(run, scheduler_states([run])).state == "missing", (folder, tok)
        assert Submission(LocalBackend(), p.exp / "logs" / "train", "train").attach([run]) == [run]
    record_submission(run, executor="local", job_id=str(b_job.pid), stage="train", folder=a_folder,
                      token=str(int(token) - 1))
    assert control.cancel(p) == ["no queued or running stage job to cancel"]
    assert b_job.poll() is None  # B's job lives on
    # the same process recorded as what it is (its folder, its start time) is running
    record_submission(run, executor="local", job_id=str(b_job.pid), stage="train", folder=str(b_folder), token=token)
    assert run_state(run, scheduler_states([run])).state == "running"


def test_submission_json_records_the_jobs_folder_and_start_time(tmp_path: Path) -> None:
    run = tmp_path / "run"
    sub = Submission(LocalBackend(max_jobs=1), tmp_path / "logs", "eval", Resources(cpus=1, time_min=5))
    (job,) = sub.submit([(RunJob(run, sleeper, 3.0), [run])])
    rec = read_submission(run)
    assert rec["job_id"] == job.job_id and rec["folder"] == str((tmp_path / "logs").absolute())
    assert rec["token"] == procs.start_time(job.job_id) != ""
    assert str(tmp_path / "logs") in procs.cmdline(job.job_id)  # the folder is in the job's command line
    assert scheduler_states([run]) == {job.job_id: JobState("running")}
    sub.wait()
    assert not (tmp_path / "logs" / "controllers.log").read_text().strip()  # the controller said nothing


def test_queued_local_runs_are_pending_and_ended_jobs_are_reported_while_others_wait(tmp_path: Path) -> None:
    runs = [tmp_path / f"run{i}" for i in range(3)]
    sub = Submission(LocalBackend(max_jobs=1), tmp_path / "logs", "eval", Resources(cpus=1, time_min=5))
    seen: list[tuple[int, int, list[str]]] = []

    def on_end(outcome, n: int, total: int) -> None:
        seen.append((n, total, [run_state(r, scheduler_states([r])).state for r in runs]))

    sub.submit([(RunJob(r, sleeper, 0.5), [r]) for r in runs], on_end=on_end)
    # the first job's end was reported while the last one still waited for its slot (pending, not missing)
    assert seen[0][:2] == (1, 3) and seen[0][2][0] == "done" and seen[0][2][2] == "pending", seen
    sub.wait(on_end)
    assert [n for n, _, _ in seen] == [1, 2, 3] and seen[-1][2] == ["done"] * 3


# ------------------------------------------------------------------ jobs no run folder records


def test_cancel_finds_a_job_no_run_folder_records(tmp_path: Path, processes) -> None:
    """A launcher killed between starting a job and writing its submission.json: the job is found
    under the experiment's logs folder, cancelled and named; another experiment's job is left alone."""
    p = Pipeline(smoke.sweep(), tmp_path / "smoke", executor="local", echo=lambda _: None)
    stray = processes(LOCAL_CONTROLLER, str((p.exp / "logs" / "eval").absolute()))
    other = processes(LOCAL_CONTROLLER, str((tmp_path / "smoke-2" / "logs" / "eval").absolute()))
    lines = control.cancel(p)
    assert f"cancelled local job {stray.pid} (local): listed by the scheduler under {p.exp / 'logs'}, recorded by " \
           "no run folder" in lines, lines
    assert lines[-1] == "cancelled 0 run(s) in 1 job(s); relaunch the same command to resubmit them"
    assert stray.wait(timeout=30) is not None
    assert other.poll() is None


def test_a_cancelled_run_still_waiting_for_a_slot_is_cancelled_with_its_launcher(tmp_path: Path,
                                                                                 processes) -> None:
    p = Pipeline(smoke.sweep(), tmp_path / "smoke", executor="local", echo=lambda _: None)
    run = p.train.units()[0].run_dir
    run.mkdir(parents=True)
    holder = processes("sweeps.launch", "smoke")  # a launcher whose run waits for a slot
    record_submission(run, executor="local", job_id=f"queued-{holder.pid}", stage="train",
                      token=procs.start_time(holder.pid))
    assert run_state(run, scheduler_states([run])).state == "pending"
    lines = control.cancel(p)
    assert lines[-1] == "cancelled 1 run(s) in 1 job(s); relaunch the same command to resubmit them", lines
    assert read_error(run)["type"] == CANCELLED


# ------------------------------------------------------------------ the local driver


def test_a_killed_local_driver_reads_killed_and_a_damaged_record_is_named(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    exp = tmp_path / "smoke"
    exp.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "sweeps.launch"])
    rec = {"executor": "local", "job_id": str(proc.pid), "token": procs.start_time(proc.pid), "log": str(exp / "x")}
    (exp / "driver.json").write_text(json.dumps(rec))
    wait_until(lambda: driver.driver_state(rec) == ("RUNNING", True), 30, "the stand-in driver")
    proc.kill()
    proc.wait()
    assert driver.driver_state(rec) == ("KILLED", False)
    assert driver.driver_state({**rec, "exit": 0}) == ("ENDED", False)
    assert driver.driver_state({**rec, "exit": 1}) == ("ENDED", False)  # some runs failed: in the table
    assert driver.driver_state({**rec, "exit": 2}) == ("FAILED", False)
    assert driver.driver_state({**rec, "cancelled": "now"}) == ("CANCELLED", False)
    (exp / "driver.json").write_text('{"executor": "lo')
    assert launch.main(["smoke", "--status", "--executor", "local", "--out", str(tmp_path)]) == 0
    assert any(line.startswith("driver   damaged record: ") and "driver.json" in line
               for line in capsys.readouterr().out.splitlines())
    with pytest.raises(SystemExit) as exc:
        launch.main(["smoke", "--logs", "driver", "--executor", "local", "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "driver.json" in err and "never launched with --detach" not in err, err


def test_the_drivers_exit_status_and_the_cancel_mark_both_survive_concurrent_updates(tmp_path: Path) -> None:
    """driver.json is read-modify-written by the driver (its exit status) and by --cancel (that it
    cancelled it) at about the same moment: each update keeps the other's key (a lost update made a
    cancelled driver read ENDED)."""
    record = tmp_path / "driver.json"
    record.write_text(json.dumps({"executor": "local", "job_id": "1"}))
    script = ("import sys\nfrom core.atomic import update_json\n"
              "for i in range(60):\n"
              "    update_json(sys.argv[1], lambda r: {**r, sys.argv[2]: r.get(sys.argv[2], 0) + 1})\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    writers = [subprocess.Popen([sys.executable, "-c", script, str(record), key], env=env) for key in ("exit", "cancelled")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    assert json.loads(record.read_text()) == {"executor": "local", "job_id": "1", "exit": 60, "cancelled": 60}
