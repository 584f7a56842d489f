"""Executors without SLURM: choice of executor, the bounded local executor, job wrappers, local states."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit

from cluster import jobs as jobs_mod
from cluster.backends import get_backend, resolve_kind
from cluster.backends.debug import DebugBackend, InProcessExecutor
from cluster.backends.local import BoundedLocalExecutor, LocalBackend, local_controller_alive, local_task_pids
from cluster.backends.slurm import SlurmBackend, chunk_sizes, slurm_available, slurm_states
from cluster.jobs import (
    CheckpointableRunJob,
    ChunkJob,
    RunJob,
    RunResult,
    TooManyAttemptsError,
    read_attempts,
)
from cluster.resources import LocalCapacity, Resources, local_slots
from cluster.submission import Submission, scheduler_states
from core.runs import JobState, read_error, record_submission, run_state

# Job processes cannot import this test module: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

FAST = Resources(cpus=1, time_min=5)


# ------------------------------------------------------------------ job bodies


def stamp(folder: str, name: str, seconds: float) -> dict:
    """Write start and end times to <folder>/<name>.json around a sleep."""
    start = time.time()
    time.sleep(seconds)
    Path(folder, f"{name}.json").write_text(json.dumps({"start": start, "end": time.time()}))
    return {"name": name}


def environment(names: list[str]) -> dict:
    return {"env": {n: os.environ.get(n) for n in names}}


def fail_if(value: int, bad: int) -> dict:
    if value == bad:
        raise ValueError(f"bad value {value}")
    return {"value": value}


def slow_once(run_dir: str, seconds: float) -> dict:
    """Counts its calls in a file beside the run, then works for a while."""
    with open(Path(run_dir).parent / "calls.txt", "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return {"pid": os.getpid()}


def fill_runs(run_dirs: list[str], crash: bool) -> dict:
    """Like an evaluation chunk: writes the first run's result, then crashes or writes the rest."""
    from core.runs import write_result
    write_result(Path(run_dirs[0]), {"value": 0})
    if crash:
        raise RuntimeError("model did not load")
    for i, d in enumerate(run_dirs[1:], 1):
        write_result(Path(d), {"value": i})
    return {"conditions": len(run_dirs)}


def write_own_result(run_dir: str) -> None:
    from core.runs import write_result
    write_result(Path(run_dir), {"kind": "own"})


# ------------------------------------------------------------------ executors


def _fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`srun` exists (so submitit would pick SLURM) but `scontrol ping` reaches no controller."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("srun", "exit 0"), ("scontrol", "echo 'Slurmctld(primary) at x is DOWN'; exit 1")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_auto_picks_local_when_no_controller_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_bin(tmp_path, monkeypatch)
    assert submitit.AutoExecutor(tmp_path / "auto").cluster == "slurm"  # what we must not rely on
    assert not slurm_available()
    assert resolve_kind("auto") == "local"
    assert isinstance(get_backend("auto").executor(tmp_path / "logs", FAST), BoundedLocalExecutor)
    with pytest.raises(RuntimeError, match="no SLURM controller"):
        SlurmBackend().executor(tmp_path / "logs", FAST)


def test_unknown_kind_names_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'cloud' is not one of auto, slurm, local, debug"):
        get_backend("cloud")


def test_resources_validation() -> None:
    r = Resources(extra_sbatch="qos=high constraint='a100|h100' exclusive")
    assert r.sbatch_options() == {"qos": "high", "constraint": "a100|h100", "exclusive": True}
    assert Resources(time_min=1).signal_delay == 12 and Resources(time_min=600).signal_delay == 120
    for bad, match in [(dict(cpus=0), "cpus 0 must be an integer >= 1"),
                       (dict(gpus=True), "gpus True"),
                       (dict(mem_gb=-2), "mem_gb -2 must be a positive"),
                       (dict(partition="a b"), "partition 'a b'"),
                       (dict(time_min=1, signal_delay_s=60), "signal_delay_s 60 must be shorter"),
                       (dict(extra_sbatch=("mem=4G",)), "'mem', which mem_gb sets"),
                       (dict(extra_sbatch=("qos",  "qos=low")), "sets 'qos' twice"),
                       (dict(extra_sbatch=("=x",)), "must look like key=value")]:
        with pytest.raises(ValueError, match=match):
            Resources(**bad)


def test_local_slots_from_cpus_memory_gpus_and_parallelism() -> None:
    cap = LocalCapacity(cpus=16, mem_gb=30.0, gpus=(0, 1, 2, 3))
    assert local_slots(Resources(cpus=4), cap) == 4
    assert local_slots(Resources(cpus=1, mem_gb=8), cap) == 3
    assert local_slots(Resources(cpus=1, gpus=2), cap) == 2
    assert local_slots(Resources(cpus=1, array_parallelism=5), cap) == 5
    assert local_slots(Resources(cpus=64), cap) == 1  # a job bigger than the machine still runs, alone


def test_local_gpus_are_shared_out(tmp_path: Path) -> None:
    cap = LocalCapacity(cpus=8, mem_gb=None, gpus=(0, 1))
    ex = LocalBackend(capacity=cap).executor(tmp_path, Resources(gpus=1))
    assert isinstance(ex, BoundedLocalExecutor) and ex.max_jobs == 2 and ex.gpus == (0, 1)
    with pytest.raises(ValueError, match="gpus 3 per job, but this machine shows 2"):
        LocalBackend(capacity=cap).executor(tmp_path, Resources(gpus=3))
    cpu_only = LocalBackend(capacity=LocalCapacity(8, None, ())).executor(tmp_path, Resources(gpus=1))
    assert cpu_only.parameters["gpus_per_node"] == 0


def test_bounded_local_executor_never_runs_more_than_n(tmp_path: Path) -> None:
    out = tmp_path / "stamps"
    out.mkdir()
    sub = Submission(LocalBackend(max_jobs=2), tmp_path / "logs", "eval", FAST)
    jobs = sub.submit([(RunJob(tmp_path / f"run{i}", stamp, str(out), f"job{i}", 0.8), [tmp_path / f"run{i}"])
                       for i in range(5)])
    results = [job.result() for job in jobs]
    assert [r.result["name"] for r in results] == [f"job{i}" for i in range(5)]
    spans = [json.loads((out / f"job{i}.json").read_text()) for i in range(5)]
    events = sorted([(s["start"], 1) for s in spans] + [(s["end"], -1) for s in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 2


def test_local_timeout_and_environment_reach_the_job(tmp_path: Path) -> None:
    env = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TOP_PAD_": "1073741824", "CROWDING_ODD": "a b'c $HOME"}
    ex = LocalBackend().executor(tmp_path / "logs", Resources(cpus=1, time_min=7), env=env)
    assert ex.parameters["timeout_min"] == 7
    names = [*env, "SUBMITIT_LOCAL_TIMEOUT_S", "OMP_NUM_THREADS"]
    job = ex.submit(environment, names)
    got = job.result()["env"]
    assert {k: got[k] for k in env} == env
    assert got["SUBMITIT_LOCAL_TIMEOUT_S"] == "420"
    assert got["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS", "1")


def test_failing_job_writes_error_and_the_others_complete(tmp_path: Path) -> None:
    sub = Submission(LocalBackend(max_jobs=2), tmp_path / "logs", "eval", FAST)
    run_dirs = [tmp_path / "runs" / f"r{i}" for i in range(3)]
    jobs = sub.submit([(RunJob(d, fail_if, i, 1), [d]) for i, d in enumerate(run_dirs)])
    outcomes = {o.job_id: o for o in sub.wait()}
    states = [run_state(d) for d in run_dirs]
    assert [s.state for s in states] == ["done", "failed", "done"]
    assert states[1].error == "ValueError: bad value 1"
    error = read_error(run_dirs[1])
    assert error["type"] == "ValueError" and error["message"] == "bad value 1" and "fail_if" in error["traceback"]
    outcome = outcomes[jobs[1].job_id]  # the run's own error, from its error.json
    assert outcome.error == "ValueError: bad value 1" and outcome.run_dirs == (run_dirs[1],)
    assert json.loads((run_dirs[0] / "submission.json").read_text())["stage"] == "eval"
    assert [a["outcome"] for a in read_attempts(run_dirs[1])] == ["failed"]


def test_run_lock_makes_a_second_copy_wait_and_reuse_the_result(tmp_path: Path) -> None:
    sub = Submission(LocalBackend(max_jobs=2), tmp_path / "logs", "train", FAST)
    run_dir = tmp_path / "runs" / "same"
    call = RunJob(run_dir, slow_once, str(run_dir), 1.5)
    first, second = sub.submit([(call, [run_dir]), (call, [run_dir])])
    results = sorted([first.result(), second.result()], key=lambda r: r.reused)
    assert not results[0].reused and results[1].reused
    assert results[0].result == results[1].result
    assert len((run_dir.parent / "calls.txt").read_text().split()) == 1


def test_scheduler_states_for_local_pids(tmp_path: Path) -> None:
    local = LocalBackend()
    job = local.executor(tmp_path / "logs", FAST).submit(time.sleep, 2)
    other = subprocess.Popen(["sleep", "30"])  # alive, but not a submitit controller (as a reused pid)
    try:
        assert local_controller_alive(job.job_id)
        assert local.states([job.job_id, str(other.pid), "not-a-pid"]) == {job.job_id: JobState("running")}
        # a relaunched launcher re-attaches by pid and waits for the job to end
        again = local.attach(tmp_path / "logs", job.job_id)
        assert again.result() is None
    finally:
        other.kill()
        other.wait()
    job.result()
    assert local.states([job.job_id]) == {}
    assert DebugBackend().states(["DEBUG_1"]) == {}
    assert local.attach(tmp_path / "logs", str(other.pid)) is None  # nothing to wait for: resubmit
    assert DebugBackend().attach(tmp_path / "logs", "DEBUG_1") is None


def test_a_relaunch_waits_for_the_running_local_job_of_a_run_and_resubmits_a_lost_one(tmp_path: Path) -> None:
    """Submission.attach, as a relaunched launcher calls it: the run whose job still runs is waited
    for (not run twice); the one whose controller is gone without a result is handed back to resubmit."""
    live, lost = tmp_path / "live", tmp_path / "lost"
    first = Submission(LocalBackend(), tmp_path / "logs", "train", FAST)
    first.submit([(RunJob(live, stamp, str(tmp_path), "live", 1.0), [live])])
    record_submission(lost, executor="local", job_id="999999999", stage="train")
    again = Submission(LocalBackend(), tmp_path / "logs", "train", FAST)
    assert again.attach([live, lost]) == [lost]
    (outcome,) = again.wait()
    assert outcome.run_dirs == (live,) and outcome.error == "" and run_state(live).state == "done"


def _cancel_through_a_shell(tmp_path: Path) -> float:
    """Submit a 30 s local job through a shell, cancel it once its task has started, as a relaunched
    launcher would; return how long the cancellation took to end the job."""
    local = LocalBackend()
    job = local.executor(tmp_path / "logs", FAST, env={"CROWDING_X": "1"}).submit(stamp, str(tmp_path), "never", 30)  # setup lines: a shell
    deadline = time.time() + 30
    while not local_task_pids(job.job_id) and time.time() < deadline:  # the task process exists
        time.sleep(0.05)
    start = time.time()
    local.attach(tmp_path / "logs", job.job_id).cancel()
    with pytest.raises(submitit.core.utils.UncompletedJobError):
        job.result()
    assert not (tmp_path / "never.json").exists()
    assert local.states([job.job_id]) == {}
    return time.time() - start


def test_cancel_stops_a_local_job_started_through_a_shell(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submitit.LocalJob, "_results_timeout_s", 1)
    assert _cancel_through_a_shell(tmp_path) < 10


def test_cancel_stops_a_local_job_whose_launcher_ignores_sigint(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The race behind a red suite: a launcher started in the background by a non-interactive shell
    (CI, a detached driver) has SIGINT ignored; its jobs inherit that, so the SIGINT of a cancel never
    reached them and the job ran to its end. Cancelling now escalates to SIGKILL after a grace period."""
    monkeypatch.setattr(submitit.LocalJob, "_results_timeout_s", 1)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the job's processes
    try:
        took = _cancel_through_a_shell(tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert took < 15


@pytest.mark.slow
def test_cancel_is_reliable_under_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelling, repeated with two busy processes beside it (both cores taken)."""
    monkeypatch.setattr(submitit.LocalJob, "_results_timeout_s", 1)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        for i in range(5):
            assert _cancel_through_a_shell(tmp_path / f"try{i}") < 15
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------ in-process


def test_debug_executor_runs_in_process_without_a_debugger(tmp_path: Path) -> None:
    sub = Submission(DebugBackend(), tmp_path / "logs", "train", FAST, env={"CROWDING_IN_PROCESS": "yes"})
    assert isinstance(sub.executor, InProcessExecutor)
    run_dirs = [tmp_path / "runs" / f"r{i}" for i in range(3)]
    jobs = sub.submit([(RunJob(d, fail_if, i, 2), [d]) for i, d in enumerate(run_dirs)])
    assert [o.run_dirs for o in sub.wait()] == [(d,) for d in run_dirs]  # in order, each run when waited on
    assert [run_state(d).state for d in run_dirs] == ["done", "done", "failed"]
    assert isinstance(jobs[2].exception(), ValueError)  # raised once, kept: the body does not run again
    assert sub.executor.submit(environment, ["CROWDING_IN_PROCESS"]).result()["env"] == {"CROWDING_IN_PROCESS": "yes"}
    assert "CROWDING_IN_PROCESS" not in os.environ


def test_run_call_uses_a_result_the_body_wrote_itself(tmp_path: Path) -> None:
    out = RunJob(tmp_path / "r", write_own_result, str(tmp_path / "r"))()
    assert out == RunResult(str(tmp_path / "r"), {"kind": "own"}, attempt=1)
    assert RunJob(tmp_path / "r", fail_if, 1, 1)().reused  # done runs never run again
    with pytest.raises(TypeError, match=r"neither wrote .* nor returned a mapping"):
        RunJob(tmp_path / "none", time.sleep, 0)()


def test_attempts_are_bounded_per_scheduler_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs_mod, "current_job_id", lambda: "77_3")
    call = RunJob(tmp_path / "r", fail_if, 1, 1, max_attempts=2)
    for _ in range(2):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(TooManyAttemptsError, match=r"job 77_3 started 3 times .* ValueError: bad value 1"):
        call()
    assert run_state(tmp_path / "r").error.startswith("TooManyAttemptsError: job 77_3 started 3 times")
    monkeypatch.setattr(jobs_mod, "current_job_id", lambda: "78")  # a new submission gets a new budget
    with pytest.raises(ValueError):
        call()


def test_checkpoint_requeues_the_same_call_until_the_attempts_run_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs_mod, "current_job_id", lambda: "91")
    call = CheckpointableRunJob(tmp_path / "r", fail_if, 0, 1, max_attempts=2)
    assert call.checkpoint().function is call
    call()  # one attempt recorded (done)
    assert call.checkpoint().function is call
    (tmp_path / "r" / "result.json").unlink()
    call()  # a second attempt of the same job
    with pytest.raises(TooManyAttemptsError, match="not requeuing r: job 91 already started 2 times"):
        call.checkpoint()


def test_chunk_job_writes_a_crash_to_the_runs_it_left_open(tmp_path: Path) -> None:
    dirs = [str(tmp_path / f"c{i}") for i in range(3)]
    with pytest.raises(RuntimeError, match="model did not load"):
        ChunkJob(fill_runs, dirs, True, run_dirs=dirs)()
    assert [run_state(Path(d)).state for d in dirs] == ["done", "failed", "failed"]
    assert run_state(Path(dirs[1])).error == "RuntimeError: model did not load"
    # the condition that finished before the chunk failed is a done attempt, not a failed one
    assert [a["outcome"] for a in read_attempts(dirs[0])] == ["done"]
    assert [a["outcome"] for a in read_attempts(dirs[1])] == ["failed"]
    assert ChunkJob(fill_runs, dirs, False, run_dirs=dirs)() == {"conditions": 3}
    assert [run_state(Path(d)).state for d in dirs] == ["done"] * 3
    assert [a["outcome"] for a in read_attempts(dirs[1])] == ["failed", "done"]
    assert read_attempts(dirs[0]) == read_attempts(dirs[0])[:1]  # a run already done is not counted


# ------------------------------------------------------------------ helpers


def test_chunks_are_equal_and_within_the_limit() -> None:
    assert chunk_sizes(2500, 1001) == [834, 833, 833]
    assert chunk_sizes(5, 2) == [2, 2, 1]
    assert chunk_sizes(3, 1001) == [3]
    assert chunk_sizes(0, 10) == []


def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sacct_rows: str) -> None:
    """`sacct` prints these rows (as --parsable2, under its header); `squeue` knows nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "sacct.txt").write_text("JobID|State|NodeList\n" + sacct_rows)
    (bin_dir / "sacct").write_text(f"#!/bin/sh\ncat {tmp_path / 'sacct.txt'}\n")
    (bin_dir / "squeue").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sacct", "squeue"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_sacct_states_expand_array_ranges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_slurm(tmp_path, monkeypatch, "12_0|COMPLETED|n1\n12_[1-3,7%2]|PENDING|\n12_4|CANCELLED by 0|n1\n"
                                      "13|RUNNING|n1\n13.batch|RUNNING|n1\n14+0|FAILED|n1\n")
    ids = ["12_0", "12_1", "12_2", "12_3", "12_4", "12_7", "13", "14"]
    assert slurm_states(ids) == {"12_0": "COMPLETED", "12_1": "PENDING", "12_2": "PENDING", "12_3": "PENDING",
                                 "12_7": "PENDING", "12_4": "CANCELLED", "13": "RUNNING"}


def test_a_started_task_is_not_hidden_by_its_arrays_stale_pending_range(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """As sacct printed it here while task 55_1 ran: the range's line comes after the task's own."""
    fake_slurm(tmp_path, monkeypatch, "55_0|COMPLETED|n1\n55_1|RUNNING|n1\n55_[1-2%3]|PENDING|\n")
    assert slurm_states(["55_0", "55_1", "55_2"]) == {"55_0": "COMPLETED", "55_1": "RUNNING", "55_2": "PENDING"}


def test_run_state_from_a_recorded_local_job(tmp_path: Path) -> None:
    record_submission(tmp_path, executor="local", job_id="999999999", stage="train")
    assert run_state(tmp_path, scheduler_states([tmp_path])).state == "missing"
