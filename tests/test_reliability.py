"""Reliability: the faults of a shared cluster, injected for real, and what must survive them.

Preemption and time limits (SIGUSR2 / SIGTERM, `scontrol requeue`), jobs killed outright (SIGKILL,
scancel), the launcher killed at every stage, two launches at once, eight processes building one
dataset, damaged files, and bad input refused before any job is submitted. See docs/reliability.md
for the table of faults, what the system does, and which test asserts it.

Real processes and the real one-node SLURM cluster are marked `slow` / `slurm`; run them with
    .venv/bin/python -m pytest tests/test_reliability.py tests/test_security.py -q --runslow
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
import submitit
import torch
from helpers import (
    JOB_OPTIONS,
    PREEMPT_CFG,
    PYTHON,
    REPO,
    STEPS,
    TEST_SWEEPS,
    TINY_FIELD,
    assert_same_weights,
    launcher,
    site_dir,
    tiny_sweep,
    wait_until,
)

import sweeps.launch
from cluster.backends.local import QUEUED, LocalBackend, local_task_pids
from cluster.backends.slurm import SlurmBackend
from cluster.jobs import CheckpointableRunJob, read_attempts, start_attempt
from cluster.resources import Resources
from cluster.submission import Submission, scheduler_states
from core.atomic import CorruptFileError, read_jsonl
from core.layout import CHECKPOINT, METRICS
from core.runs import (
    JobState,
    read_error,
    read_result,
    read_submission,
    record_submission,
    run_state,
    write_config,
    write_result,
)
from ecc import datasets, sources
from ecc.checkpoint import final_weights
from ecc.config import TrainConfig
from ecc.datasets import DatasetSpec
from ecc.model import ModelConfig
from ecc.runtime import DeferredSignals
from ecc.sources import mnist
from ecc.train import train
from sweeps.spec import EvalGrid, SpecError, SweepSpec

# Job processes cannot import this test module by name on every executor: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def run_until(cmd: list[str], when: str | Callable[[list[str]], bool], timeout_s: float = 240,
              **kwargs: Any) -> tuple[bool, list[str]]:
    """Run `cmd` and SIGKILL it as soon as `when` holds: a regex matching a line it printed, or a
    predicate of the lines so far (polled, e.g. on files). Returns (killed, lines printed).

    Its output goes to a file, not a pipe: the jobs it started inherit the descriptor and outlive it."""
    if isinstance(when, str):
        pattern = re.compile(when)
        when = lambda seen: any(pattern.search(line) for line in seen)  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.txt"
        with open(path, "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=REPO, **kwargs)

        def lines() -> list[str]:
            return path.read_text().splitlines()

        killed, deadline = False, time.time() + timeout_s
        try:
            while proc.poll() is None and time.time() < deadline:
                if when(lines()):
                    os.kill(proc.pid, signal.SIGKILL)
                    killed = True
                    break
                time.sleep(0.05)
        finally:
            if proc.poll() is None and not killed:
                proc.kill()
            proc.wait()
        return killed, lines()


def result_mtimes(exp: Path) -> dict[str, int]:
    """{run folder: mtime of its result.json} for every run of the experiment with a valid result."""
    out = {}
    for pattern in ("datasets/jobs/*/result.json", "train/*/result.json", "eval/*/result.json"):
        for path in exp.glob(pattern):
            if read_result(path.parent) is not None:
                out[str(path.parent.relative_to(exp))] = path.stat().st_mtime_ns
    return out


def run_folders(exp: Path) -> list[Path]:
    return sorted(p.parent for pattern in ("datasets/jobs/*/config.json", "train/*/config.json", "eval/*/config.json")
                  for p in exp.glob(pattern))


def assert_table_complete(exp: Path) -> None:
    """One done row per planned evaluation, none twice."""
    import pandas as pd

    plan = json.loads((exp / "plan.json").read_text())
    table = pd.read_csv(exp / "results.csv")
    assert len(table) == len(plan["eval"]) == table["hash"].nunique(), table[["hash", "state"]]
    assert set(table["state"]) == {"done"}, table[["hash", "state", "error"]]


# ================================================================== a training job, slowed down
STEPS_FILE = "steps.txt"


def slow_train(cfg: TrainConfig, run_dir: str, data_root: str, pause_s: float) -> dict[str, Any]:
    """The training job body, pausing `pause_s` after each step (sleeping changes no weight) and
    recording in steps.txt each start ("start") and each step it runs."""
    record = Path(run_dir) / STEPS_FILE

    def note(text: str) -> None:
        with open(record, "a") as f:
            f.write(text + "\n")

    def on_step(step: int) -> None:
        note(str(step))
        time.sleep(pause_s)

    note("start")
    return train(cfg, run_dir, data_root=data_root, options=JOB_OPTIONS, on_step=on_step)


def starts(run_dir: Path) -> list[list[int]]:
    """The steps each start of the job body ran (from steps.txt)."""
    out: list[list[int]] = []
    path = Path(run_dir) / STEPS_FILE
    for line in (path.read_text().splitlines() if path.exists() else []):
        if line == "start":
            out.append([])
        elif line:
            out[-1].append(int(line))
    return out


def started_steps(run_dir: Path, n_starts: int, n_steps: int) -> bool:
    """True once start number `n_starts` has run at least `n_steps` steps."""
    s = starts(run_dir)
    return len(s) == n_starts and len(s[-1]) >= n_steps


def outcomes(run_dir: Path) -> list[tuple[int, str]]:
    return [(a["attempt"], a["outcome"]) for a in read_attempts(run_dir)]


def assert_resumed_each_time(run_dir: Path) -> None:
    """Every start after the first continued from a checkpoint (not from step 1), and the last one
    that trained ran to the end without a gap. A start may run no step only when none was left (a
    signal during the last epoch's validation: checkpoint, requeue, and the next start just writes
    the result)."""
    s = starts(run_dir)
    assert len(s) >= 2, s
    ran = [steps for steps in s if steps]
    for before, after in itertools.pairwise(ran):
        assert 1 < after[0] <= before[-1] + 1, s  # resumed at the last checkpoint, at most one step back
    assert ran[-1] == list(range(ran[-1][0], STEPS + 1)), s
    for i, steps in enumerate(s):
        assert steps or any(p and p[-1] == STEPS for p in s[:i]), s


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> dict[str, torch.Tensor]:
    """Final weights of the uninterrupted run (it also builds the datasets the jobs then share)."""
    run = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    try:
        train(PREEMPT_CFG, run, data_root=data_root, options=JOB_OPTIONS)
    finally:
        torch.set_num_threads(threads)
    return final_weights(run)


@pytest.fixture
def fast_results(monkeypatch: pytest.MonkeyPatch) -> None:
    # submitit waits this long (15 s by default) for the result file of a job that ended without one
    monkeypatch.setattr(submitit.LocalJob, "_results_timeout_s", 2)
    monkeypatch.setattr(submitit.SlurmJob, "_results_timeout_s", 2)


def checkpointable(run_dir: Path, data_root: Path, pause_s: float, **kwargs: Any) -> CheckpointableRunJob:
    return CheckpointableRunJob(run_dir, slow_train, PREEMPT_CFG, str(run_dir), str(data_root), pause_s, **kwargs)


def local_submission(folder: Path, **resources: Any) -> Submission:
    """The launcher's submission path for one training job on the local executor."""
    return Submission(LocalBackend(max_jobs=1), folder, "train", Resources(**{"cpus": 1, "time_min": 10, **resources}))


def slurm_submission(folder: Path, name: str, **resources: Any) -> Submission:
    """The launcher's submission path on the real cluster, under a job name of our own."""
    return Submission(SlurmBackend(), folder, "train", Resources(**{"cpus": 1, "mem_gb": 1, "time_min": 10, **resources}),
                      name=name)


# ================================================================== fast: the pieces, in-process
def test_sigusr2_is_not_lost_when_sigterm_follows_within_a_step() -> None:
    """A time limit's SIGUSR2 then a preemption's SIGTERM before the next step boundary: both reach
    their handlers, in order (before the fix, SIGTERM replaced SIGUSR2 and the job was never requeued)."""
    calls: list[str] = []
    old = {s: signal.getsignal(s) for s in (signal.SIGUSR2, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGUSR2, lambda s, f: calls.append("USR2"))
        signal.signal(signal.SIGTERM, lambda s, f: calls.append("TERM"))
        with DeferredSignals() as signals:
            for s in (signal.SIGUSR2, signal.SIGTERM, signal.SIGUSR2):
                os.kill(os.getpid(), s)
            assert calls == [] and signals.pending == signal.SIGUSR2  # deferred to the step boundary
            signals.forward()
            assert calls == ["USR2", "TERM"] and signals.pending is None
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def test_partial_or_torn_result_is_never_taken(tmp_path: Path) -> None:
    """What a killed or interrupted writer can leave is never a result: the run stays to be done."""
    run = tmp_path / "run"
    run.mkdir()
    (run / ".result.json.tmp-123-abcd").write_text('{"kind": "eval", "accuracy": 0.9')  # killed mid-write
    assert read_result(run) is None and run_state(run).state == "missing"
    (run / "result.json").write_text('{"kind": "eval", "accuracy": 0.9')  # torn by a non-atomic copy
    assert read_result(run) is None
    record_submission(run, executor="slurm", job_id="77_1", stage="eval")
    state = run_state(run, {"77_1": JobState("cancelled", "CANCELLED")})
    assert state.state == "failed" and "CANCELLED" in state.error  # the scheduler's state, and resubmitted
    (run / "result.json").write_text(json.dumps({"kind": "eval", "n_images": 10}))  # lacks required keys
    assert read_result(run) is None and read_result(run, "eval") is None
    write_result(run, {"kind": "eval", "n_images": 10, "n_correct": 9, "accuracy": 0.9})
    assert run_state(run, {}, "eval").state == "failed"  # a result counts only beside its run's config.json
    write_config(run, "eval", run.name, {})
    assert run_state(run, {}, "eval").state == "done"
    assert read_result(run, "train") is None  # a result of another kind is not this run's


def test_a_killed_attempt_is_recorded_as_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start that never recorded its end (SIGKILL, scancel, requeue) reads `lost`, not `running`,
    once the run is started again; the bound counts it."""
    monkeypatch.setattr("cluster.jobs.current_job_id", lambda: "41_0")
    assert start_attempt(tmp_path, 2) == 1  # ... and is killed: no end recorded
    assert start_attempt(tmp_path, 2) == 2  # requeued: the same job id starts again
    assert outcomes(tmp_path) == [(1, "lost"), (2, "running")]
    monkeypatch.setattr("cluster.jobs.current_job_id", lambda: "42_0")  # resubmitted by the next launch
    assert start_attempt(tmp_path, 2, exclusive=True) == 1
    assert [a["outcome"] for a in read_attempts(tmp_path)] == ["lost", "lost", "running"]


# ------------------------------------------------------------------ bad input, refused before any job
def run_launch(argv: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
               extra: dict[str, Callable[[bool], SweepSpec]] | None = None) -> tuple[int, str]:
    """The launcher in-process with the test sweeps: (exit status, stderr)."""
    real = sweeps.launch.available_sweeps
    monkeypatch.setattr(sweeps.launch, "available_sweeps", lambda: {**real(), **TEST_SWEEPS, **(extra or {})})
    try:
        rc = sweeps.launch.main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    captured = capsys.readouterr()
    return rc, captured.err


def assert_usage_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def bad_sweeps() -> dict[str, Callable[[bool], SweepSpec]]:
    base = tiny_sweep().models[0][1]
    return {
        "bad-pm": lambda q: tiny_sweep(models=(("m", replace(base, model=ModelConfig(pm="4-5-1-1"))),)),
        "no-condition": lambda q: tiny_sweep(grid=EvalGrid(target_eccs=(500.0,), flanker_eccs=(80.0,))),
        "zero-batch": lambda q: tiny_sweep(models=(("m", replace(base, batch_size=0)),)),
        "zero-epochs": lambda q: tiny_sweep(models=(("m", replace(base, num_epochs=0)),)),
        "negative-images": lambda q: tiny_sweep(models=(("m", replace(base, train_images=-5)),)),
        "negative-test-images": lambda q: tiny_sweep(grid=EvalGrid(target_eccs=(0.0,), flanker_eccs=(80.0,),
                                                                   test_images=-1)),
        "zero-field": lambda q: tiny_sweep(models=(("m", replace(base, stimulus=replace(TINY_FIELD, crop_size=0))),)),
        "escaping-model": lambda q: tiny_sweep(models=(("../../evil", base),)),
        "escaping-sweep": lambda q: tiny_sweep(name="../evil"),
        "no-lr": lambda q: tiny_sweep(learning_rates=(0.0,)),
    }


@pytest.mark.parametrize(("argv", "needles"), [
    (["nosuch"], ["unknown sweep 'nosuch'", "available:", "smoke", "tiny"]),
    ([], ["no sweep given", "available:"]),
    (["tiny", "--executor", "pbs"], ["'pbs'", "'auto', 'slurm', 'local', 'debug'"]),
    (["tiny", "--cpus", "0"], ["--cpus must be >= 1, got 0"]),
    (["tiny", "--gpus", "-1"], ["--gpus must be >= 0, got -1"]),
    (["tiny", "--mem", "-2"], ["--mem must be > 0 GB, got -2"]),
    (["tiny", "--time", "0"], ["--time must be >= 1, got 0"]),
    (["tiny", "--array-parallelism", "0"], ["--array-parallelism must be >= 1, got 0"]),
    (["tiny", "--conditions-per-job", "-3"], ["--conditions-per-job must be >= 1", "got -3"]),
    (["tiny", "--sbatch", "time=5"], ["extra_sbatch item 'time=5'", "time_min"]),
    (["bad-pm"], ["4-5-1-1", "must not increase"]),
    (["no-condition"], ["no valid condition", "500"]),
    (["zero-batch"], ["batch_size must be an integer >= 1, got 0"]),
    (["zero-epochs"], ["num_epochs must be an integer >= 1, got 0"]),
    (["negative-images"], ["train_images must be an integer >= 0, got -5"]),
    (["negative-test-images"], ["test_images must be >= 0", "-1"]),
    (["zero-field"], ["crop_size", "0"]),
    (["escaping-model"], ["'../../evil'", "must not escape the experiment folder"]),
    (["escaping-sweep"], ["'../evil'", "letters, digits"]),
    (["no-lr"], ["learning rates must be positive", "0.0"]),
])
def test_bad_input_is_a_one_line_usage_error_before_any_job(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                                            needles: list[str]) -> None:
    out = tmp_path / "out"
    argv = [*argv, "--out", str(out)] + ([] if "--executor" in argv else ["--executor", "debug"])
    rc, err = run_launch(argv, capsys, monkeypatch, bad_sweeps())
    assert_usage_error(rc, err, *needles)
    assert not list(out.rglob("submission.json")) and not list(out.rglob("logs"))  # nothing submitted


def corrupt_mnist(folder: Path, how: str) -> Path:
    """An IDX copy of MNIST with one file damaged: truncated (wrong size), or missing."""
    arrays = sources.load_mnist()
    for key, base in sources.MNIST_IDX_NAMES.items():
        sources.write_idx(folder / base, getattr(arrays, key).astype(np.uint8))
    victim = folder / sources.MNIST_IDX_NAMES["train_labels"]
    if how == "truncated":
        victim.write_bytes(victim.read_bytes()[:-100])
    else:
        victim.unlink()
    return victim


@pytest.mark.parametrize("how", ["truncated", "missing"])
def test_corrupt_or_missing_mnist_stops_the_launch_before_any_job(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    victim = corrupt_mnist(tmp_path / "mnist", how)
    extra = {"bad-mnist": lambda q: tiny_sweep(source=sources.SourceConfig(mnist=str(tmp_path / "mnist")))}
    out = tmp_path / "out"
    rc, err = run_launch(["bad-mnist", "--executor", "debug", "--out", str(out)], capsys, monkeypatch, extra)
    assert rc != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert victim.name in err and ("truncated" in err if how == "truncated" else "missing from" in err), err
    assert not list(out.rglob("submission.json")) and not list(out.rglob("logs"))


def test_corrupt_mnist_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    corrupt_mnist(tmp_path / "mnist", "truncated")
    extra = {"bad-mnist": lambda q: tiny_sweep(source=sources.SourceConfig(mnist=str(tmp_path / "mnist")))}
    rc, err = run_launch(["bad-mnist", "--executor", "debug", "--out", str(tmp_path / "out")], capsys, monkeypatch,
                         extra)
    assert_usage_error(rc, err, "train-labels-idx1-ubyte", "truncated")
    assert not (tmp_path / "out" / "tiny" / "plan.json").exists()


def test_mnist_with_the_wrong_md5_is_refused_or_kept_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """The embedded archive is checked against its MD5; an IDX folder with other bytes is said out
    loud and keyed by its own fingerprint, so its datasets never mix with the standard MNIST's."""
    arrays = sources.load_mnist()
    folder = tmp_path / "mnist"
    for key, base in sources.MNIST_IDX_NAMES.items():
        data = getattr(arrays, key).astype(np.uint8).copy()
        if key == "test_images":
            data[0, 14, 14] ^= 0xFF  # one flipped byte: same size, another MD5
        sources.write_idx(folder / base, data)
    src = sources.SourceConfig(mnist=str(folder))
    with caplog.at_level("WARNING", logger="ecc.sources"):
        assert sources.fingerprint(src) != sources.MNIST_FINGERPRINT
    assert any("not the standard MNIST" in r.message and "t10k-images-idx3-ubyte" in r.message for r in caplog.records)
    spec = DatasetSpec(split="test", stimulus=TINY_FIELD, limit=10)
    assert datasets.dataset_key(spec, src) != datasets.dataset_key(spec)

    mnist._load_embedded.cache_clear()
    monkeypatch.setattr(mnist, "MNIST_PAYLOAD_MD5", {**mnist.MNIST_PAYLOAD_MD5, "test_labels": "0" * 32})
    try:
        with pytest.raises(CorruptFileError, match=r"test_labels has MD5 .*, expected 0{32}"):
            sources.load_mnist()
    finally:
        mnist._load_embedded.cache_clear()


def test_unwritable_output_folder_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("")
    rc, err = run_launch(["tiny", "--executor", "debug", "--out", str(tmp_path / "a-file" / "x")], capsys, monkeypatch)
    assert_usage_error(rc, err, str(tmp_path / "a-file"), "not writable", "--out")


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists(), reason="needs root and setpriv")
def test_output_folder_without_write_permission_is_a_usage_error(tmp_path_factory: pytest.TempPathFactory) -> None:
    """As an unprivileged user (root writes anywhere), --out in a folder it may not write to."""
    folder = Path(f"/tmp/crowding-ro-{uuid.uuid4().hex[:8]}")
    folder.mkdir(mode=0o755)
    try:
        proc = subprocess.run(["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               PYTHON, "-m", "sweeps.launch", "smoke", "--executor", "debug", "--out", str(folder)],
                              capture_output=True, text=True, cwd=REPO, timeout=120,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "MPLCONFIGDIR": str(folder)})
        assert_usage_error(proc.returncode, proc.stderr, str(folder), "not writable")
        assert list(folder.iterdir()) == []
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def test_a_runtime_error_is_one_line_and_its_traceback_needs_verbose(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """An error while running (not a usage error): status 1 and one line; with --verbose, the traceback."""
    import sweeps.pipeline

    def boom(self: Any) -> int:
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(sweeps.pipeline.Pipeline, "run", boom)
    argv = ["tiny", "--executor", "debug", "--out", str(tmp_path / "out")]
    rc, err = run_launch(argv, capsys, monkeypatch)
    assert rc == 1 and err.strip() == "error: RuntimeError: the disk caught fire (--verbose for the traceback)", err
    with pytest.raises(RuntimeError, match="the disk caught fire"):
        run_launch([*argv, "--verbose"], capsys, monkeypatch)


def test_a_second_launch_refuses_naming_the_first(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process holds the experiment (its lock and launch.json): status 3, its pid named."""
    exp = tmp_path / "out" / "tiny"
    exp.mkdir(parents=True)
    holder = subprocess.Popen([PYTHON, "-c", textwrap.dedent(f"""
        import json, os, sys
        from filelock import FileLock
        lock = FileLock({str(exp / "launch.lock")!r}); lock.acquire()
        json.dump({{"pid": os.getpid(), "host": "here", "command": "first", "started": "now"}},
                  open({str(exp / "launch.json")!r}, "w"))
        print("held", flush=True); sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        rc, err = run_launch(["tiny", "--executor", "debug", "--out", str(tmp_path / "out")], capsys, monkeypatch)
        assert rc == 3, err
        assert f"already being run by pid {holder.pid}" in err and "'tiny'" in err, err
        assert sorted(p.name for p in exp.iterdir()) == ["launch.json", "launch.lock"]  # nothing touched
    finally:
        holder.communicate("", timeout=30)


# ================================================================== slow: real processes
def _build_in_child(args: tuple[DatasetSpec, str, str, int]) -> tuple[bool, str, str]:
    """In a fresh process: wait until all are ready, ensure() the dataset, hash what it then reads."""
    spec, root, ready, n = args
    built = []
    original = datasets._build

    def counting(*a: Any, **k: Any) -> None:
        built.append(True)
        return original(*a, **k)

    datasets._build = counting
    Path(ready, str(os.getpid())).touch()
    deadline = time.time() + 120
    while len(os.listdir(ready)) < n and time.time() < deadline:  # all start together
        time.sleep(0.01)
    folder = datasets.ensure(spec, root, progress=False)
    data = datasets.load(spec, root, progress=False)
    digest = hashlib.sha256(np.ascontiguousarray(data.images).tobytes() + data.labels.tobytes()).hexdigest()
    return bool(built), str(folder), digest


@pytest.mark.slow
def test_eight_processes_build_one_dataset_once_and_read_identical_arrays(tmp_path: Path) -> None:
    spec = DatasetSpec(split="validation", stimulus=TINY_FIELD, random_shifts=True, limit=400, validation_size=1000)
    ready = tmp_path / "ready"
    ready.mkdir()
    with mp.get_context("spawn").Pool(8) as pool:
        out = pool.map(_build_in_child, [(spec, str(tmp_path / "data"), str(ready), 8)] * 8)
    assert sum(built for built, _, _ in out) == 1  # one build, the other seven waited and loaded it
    assert len({folder for _, folder, _ in out}) == 1
    fresh = datasets.generate(spec)
    want = hashlib.sha256(np.ascontiguousarray(fresh.images).tobytes() + fresh.labels.tobytes()).hexdigest()
    assert {d for _, _, d in out} == {want}  # no torn or partial file was ever read
    folder = Path(out[0][1])
    datasets._check(folder, folder.name)  # sizes and checksums match meta.json
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]  # no temporary folder left


@pytest.mark.slow
def test_local_preemption_signal_checkpoints_requeues_and_resumes_bitwise(tmp_path: Path, data_root: Path,
                                                                          reference) -> None:
    """LocalJob._interrupt (SIGUSR2, as a preemption): checkpoint at the step boundary, requeue,
    resume from the checkpoint, the same final weights as an uninterrupted run."""
    run = tmp_path / "run"
    sub = local_submission(tmp_path / "logs")
    (job,) = sub.submit([(checkpointable(run, data_root, 0.3), [run])])
    wait_until(lambda: started_steps(run, 1, 4), 90, "4 steps of the first start")
    job._interrupt()
    (outcome,) = sub.wait()
    result = outcome.result
    assert result.attempt == 2 and result.result["steps"] == STEPS
    assert outcomes(run) == [(1, "interrupted"), (2, "done")]
    s = starts(run)
    assert s[1][0] == s[0][-1] + 1 and s[0] + s[1] == list(range(1, STEPS + 1)), s  # no step lost, none twice
    assert_same_weights(final_weights(run), reference)
    assert [m["epoch"] for m in read_jsonl(run / METRICS)] == list(range(1, 7))


@pytest.mark.slow
def test_local_time_limit_signal_checkpoints_requeues_and_finishes_bitwise(tmp_path: Path, data_root: Path,
                                                                           reference) -> None:
    """A 1-minute limit whose SIGUSR2 comes 45 s early: each start is cut after ~15 s, checkpoints,
    is requeued, and the run ends with the uninterrupted run's weights."""
    run = tmp_path / "run"
    sub = local_submission(tmp_path / "logs", time_min=1, signal_delay_s=45)
    # 30 steps x 0.8 s > 15 s. On a loaded machine a start spends much of its 15 s starting Python and
    # loading data: attempts are not what this test is about, so it allows enough of them (ours and
    # submitit's own count of time-outs).
    sub.executor.max_num_timeout = 10
    sub.submit([(checkpointable(run, data_root, 0.8, max_attempts=10), [run])])
    (outcome,) = sub.wait()
    result = outcome.result
    assert result.result["steps"] == STEPS
    assert len(starts(run)) >= 2  # it was cut and requeued at least once
    assert [o for _, o in outcomes(run)] == ["interrupted"] * (len(starts(run)) - 1) + ["done"]
    assert_resumed_each_time(run)
    assert_same_weights(final_weights(run), reference)


@pytest.mark.slow
def test_local_repeated_preemption_is_bounded_and_ends_failed_with_its_reason(tmp_path: Path, data_root: Path,
                                                                              fast_results) -> None:
    run = tmp_path / "run"
    job_call = checkpointable(run, data_root, 0.3, max_attempts=2)
    sub = local_submission(tmp_path / "logs")
    (job,) = sub.submit([(job_call, [run])])
    wait_until(lambda: started_steps(run, 1, 3), 90, "the first start")
    job._interrupt()
    wait_until(lambda: started_steps(run, 2, 2), 90, "the second start")
    job._interrupt()
    sub.wait()
    state = run_state(run)
    assert state.state == "failed" and state.error.startswith("TooManyAttemptsError"), state
    assert "max_attempts 2" in state.error
    assert read_error(run)["type"] == "TooManyAttemptsError"
    assert outcomes(run) == [(1, "interrupted"), (2, "failed")]
    assert "TooManyAttemptsError" in read_attempts(run)[1]["error"]
    assert read_result(run) is None and not (run / "result.json").exists()
    # the progress is kept: a later launch (a new job, new attempts) resumes from this checkpoint
    assert torch.load(run / CHECKPOINT, weights_only=True)["step"] == starts(run)[-1][-1]


@pytest.mark.slow
def test_local_sigkill_of_a_job_is_failed_then_a_resubmission_resumes_bitwise(tmp_path: Path, data_root: Path,
                                                                              reference, fast_results) -> None:
    run = tmp_path / "run"
    sub = local_submission(tmp_path / "logs")
    (job,) = sub.submit([(checkpointable(run, data_root, 0.3), [run])])
    wait_until(lambda: started_steps(run, 1, 5), 90, "5 steps")
    (task,) = local_task_pids(job.job_id)
    os.kill(task, signal.SIGKILL)
    sub.wait()  # what the launcher does: error.json says how the job ended
    state = run_state(run)
    assert state.state == "failed" and "has not produced any output" in state.error, state
    assert read_error(run)["type"] == "JobEndedWithoutResult"
    assert read_result(run) is None and not list(run.glob("*result*"))  # no partial result, none taken
    # The next launch resubmits a failed run: a new job, which resumes from the last checkpoint.
    sub.submit([(checkpointable(run, data_root, 0.0), [run])])
    sub.wait()
    assert run_state(run).state == "done"
    assert outcomes(run) == [(1, "lost"), (1, "done")]  # attempt numbers count per job
    assert_resumed_each_time(run)
    assert_same_weights(final_weights(run), reference)


def all_submitted(exp: Path, stage: str, n: int) -> bool:
    """All `n` runs of the stage have a job started (not still queued in the launcher for a local slot),
    and some has no result yet (jobs in flight)."""
    pattern = {"datasets": "datasets/jobs/*", "train": "train/*", "eval": "eval/*"}[stage]
    runs = [p for p in exp.glob(pattern) if (sub := read_submission(p)) and not sub["job_id"].startswith(QUEUED)]
    return len(runs) == n and any(read_result(p) is None for p in runs)


@pytest.mark.slow
def test_launcher_killed_at_every_stage_then_the_next_launch_finishes_without_rerunning(tmp_path: Path) -> None:
    """SIGKILL of the launcher while the jobs of datasets, train and eval are in flight (held at their
    start, local executor: they go on as orphans), and during collect; each relaunch re-attaches to
    the orphans, and no job that had completed runs again."""
    out = tmp_path / "out"
    exp = out / "tiny"
    gates = tmp_path / "gates"
    gates.mkdir()
    for stage in ("datasets", "train", "eval"):
        (gates / stage).touch()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site_dir(tmp_path / "site")), str(REPO)]),
           "CROWDING_TEST_GATES": str(gates)}
    cmd = launcher("tiny", "--executor", "local", "--out", str(out))
    sizes = {"datasets": 2, "train": 2, "eval": 4}

    def kill_when(previous: str | None, stage: str) -> Callable[[list[str]], bool]:
        def when(lines: list[str]) -> bool:
            if previous and any(line.startswith(f"[{previous}]") and "still running from an earlier launch" in line
                                for line in list(lines)):
                (gates / previous).unlink(missing_ok=True)  # the orphans were found: let them go on
            if stage == "collect":
                return any(p.suffix == ".png" for p in (exp / "figures").rglob("*"))  # mid-figures
            return all_submitted(exp, stage, sizes[stage])
        return when

    seen: dict[str, int] = {}
    log: list[str] = []
    for previous, stage in ((None, "datasets"), ("datasets", "train"), ("train", "eval"), ("eval", "collect")):
        killed, lines = run_until(cmd, kill_when(previous, stage), env=env)
        log += [f"--- killed during {stage}", *lines]
        assert killed, "\n".join(log)
        if previous:  # this launch found the previous one's jobs still running and waited for them
            assert not (gates / previous).exists(), "\n".join(log)
        for run, mtime in result_mtimes(exp).items():
            assert seen.setdefault(run, mtime) == mtime, f"{run} was run again"
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    log += ["--- last launch", proc.stdout, proc.stderr]
    assert proc.returncode == 0, "\n".join(log)
    assert "submitting" not in proc.stdout, "\n".join(log)  # everything was done already
    final = result_mtimes(exp)
    assert {r: final[r] for r in seen} == seen  # nothing that had completed ran again
    runs = run_folders(exp)
    assert len(final) == len(runs) == 2 + 2 + 4
    for run in runs:
        assert outcomes(run) == [(1, "done")], (run, read_attempts(run), "\n".join(log))  # each job ran once
    assert_table_complete(exp)
    (n,) = re.findall(r"^\[collect\] (\d+) figures", proc.stdout, re.MULTILINE)
    assert len([p for p in (exp / "figures").rglob("*") if p.suffix in (".png", ".pdf")]) == int(n) > 0


@pytest.mark.slow
def test_two_launches_at_once_the_second_refuses_and_nothing_is_corrupted(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = subprocess.Popen(launcher("tiny", "--executor", "debug", "--out", str(out)), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        assert first.stdout is not None
        assert first.stdout.readline().startswith("experiment tiny in")  # it holds the experiment
        spec_mtime = (out / "tiny" / "spec.json").stat().st_mtime_ns
        second = subprocess.run(launcher("tiny", "--executor", "debug", "--out", str(out)), capture_output=True,
                                text=True, cwd=REPO, timeout=120)
        assert second.returncode == 3, second.stdout + second.stderr
        assert f"already being run by pid {first.pid}" in second.stderr and "--status" in second.stderr
        assert "Traceback" not in second.stderr and second.stdout == ""
        assert (out / "tiny" / "spec.json").stat().st_mtime_ns == spec_mtime
        rest, _ = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, rest
    assert_table_complete(out / "tiny")
    assert all(outcomes(run) == [(1, "done")] for run in run_folders(out / "tiny"))


@pytest.mark.slow
def test_damaged_results_dataset_and_checkpoint_are_rebuilt_or_reported_never_used(tmp_path: Path) -> None:
    out = tmp_path / "out"
    exp = out / "tiny"
    cmd = launcher("tiny", "--executor", "debug", "--out", str(out))
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=240)
    assert first.returncode == 0, first.stdout + first.stderr
    before = result_mtimes(exp)
    table_before = json.loads((exp / "plan.json").read_text())
    selection = json.loads((exp / "selection.json").read_text())
    chosen = exp / "train" / selection["models"][0]["chosen"]
    evals = [exp / e["dir"] for e in table_before["eval"]]
    accuracy = {e: read_result(e)["accuracy"] for e in evals}
    ckpt_mtime = (chosen / CHECKPOINT).stat().st_mtime_ns

    # Damage: a torn eval result, a torn train result, one flipped byte in the training images.
    (evals[0] / "result.json").write_text((evals[0] / "result.json").read_text()[:40])
    (chosen / "result.json").write_text('{"kind": "train", "final": ')
    (train_set,) = [p for p in (exp / "datasets").glob("train-*") if p.is_dir()]
    images = train_set / "images.npy"
    good_images = images.read_bytes()
    raw = bytearray(good_images)
    raw[-7] ^= 0xFF
    images.write_bytes(bytes(raw))
    built_before = json.loads((train_set / "meta.json").read_text())["built"]["time"]

    second = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=240)
    assert second.returncode == 0, second.stdout + second.stderr
    after = result_mtimes(exp)
    redone = {r for r in after if after[r] != before.get(r)}
    assert redone == {str(evals[0].relative_to(exp)), str(chosen.relative_to(exp))}, redone
    assert read_result(evals[0])["accuracy"] == accuracy[evals[0]]  # the same evaluation, rebuilt
    assert (chosen / CHECKPOINT).stat().st_mtime_ns == ckpt_mtime  # its result rewritten, not retrained
    assert images.read_bytes() == good_images  # the damaged dataset was rebuilt, not used
    assert json.loads((train_set / "meta.json").read_text())["built"]["time"] > built_before
    assert_table_complete(exp)

    # A damaged checkpoint of a finished run: the evaluation that needs it reports it and fails.
    (chosen / CHECKPOINT).write_bytes(b"PK\x03\x04 not a checkpoint")
    (evals[1] / "result.json").unlink()
    third = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=240)
    assert third.returncode == 1, third.stdout + third.stderr
    assert "checkpoint.pt cannot be read" in third.stdout, third.stdout
    assert read_result(evals[1]) is None and "checkpoint.pt cannot be read" in read_error(evals[1])["message"]
    import pandas as pd

    row = pd.read_csv(exp / "results.csv").set_index("hash").loc[evals[1].name]
    assert row["state"] == "failed" and "checkpoint.pt cannot be read" in row["error"]


# ================================================================== slow + SLURM: the real cluster
def squeue_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip()


def start_now(job_id: str) -> None:
    """SLURM holds a requeued job ~2 minutes (its begin time): let it start now. On a loaded machine
    the requeue may set its begin time after our update, so the update is repeated until the job
    leaves PENDING."""
    wait_until(lambda: squeue_state(job_id) == "PENDING", 60, f"job {job_id} pending again")

    def started() -> bool:
        if squeue_state(job_id) != "PENDING":
            return True
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=False, capture_output=True)
        time.sleep(2.0)
        return squeue_state(job_id) != "PENDING"

    wait_until(started, 240, f"job {job_id} to leave PENDING")


@pytest.fixture
def slurm_name() -> str:
    """A job name of our own: the cluster may be shared, so we only ever touch our own jobs."""
    return f"crowding-rel-{uuid.uuid4().hex[:8]}"


def sacct_states(name: str) -> list[str]:
    since = (datetime.datetime.now() - datetime.timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%S")
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-D", "-o", "JobID,State", "--name", name, "-S", since],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("|", 1)[1].split()[0] for line in out.splitlines() if line.strip()]  # "CANCELLED by 0"


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_preemption_and_requeue_resume_bitwise(tmp_path: Path, data_root: Path, reference, slurm_name: str,
                                                     fast_results) -> None:
    """On the real cluster: a preemption (SIGTERM then SIGUSR2, as submitit's SlurmJob._interrupt
    sends) mid-training, then `scontrol requeue` mid-training; the job resumes each time from its
    checkpoint and ends with the uninterrupted run's weights."""
    run = tmp_path / "run"
    sub = slurm_submission(tmp_path / "logs", slurm_name)
    (job,) = sub.submit([(checkpointable(run, data_root, 0.5), [run])])
    try:
        wait_until(lambda: started_steps(run, 1, 4), 120, "4 steps of the first start")
        job._interrupt()  # scancel --signal SIGTERM, then --signal USR2: submitit checkpoints and requeues
        wait_until(lambda: outcomes(run) == [(1, "interrupted")], 60, "the checkpoint-and-requeue")
        start_now(job.job_id)
        wait_until(lambda: started_steps(run, 2, 3), 120, "3 steps of the second start")
        subprocess.run(["scontrol", "requeue", job.job_id], check=True)  # SIGTERM, SIGKILL after KillWait
        start_now(job.job_id)
        (outcome,) = sub.wait()
        result = outcome.result
    finally:
        subprocess.run(["scancel", job.job_id], check=False, capture_output=True)
    assert result.result["steps"] == STEPS and result.attempt == 3
    assert outcomes(run) == [(1, "interrupted"), (2, "lost"), (3, "done")]
    assert_resumed_each_time(run)
    assert_same_weights(final_weights(run), reference)
    assert "REQUEUED" in sacct_states(slurm_name)  # the scheduler's own record of it


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_scancel_is_failed_with_the_scheduler_state_then_resubmission_resumes(
        tmp_path: Path, data_root: Path, reference, slurm_name: str, fast_results) -> None:
    run = tmp_path / "run"
    sub = slurm_submission(tmp_path / "logs", slurm_name)
    (job,) = sub.submit([(checkpointable(run, data_root, 0.5), [run])])
    try:
        wait_until(lambda: started_steps(run, 1, 5), 120, "5 steps")
        subprocess.run(["scancel", job.job_id], check=True)
        state = wait_until(lambda: run_state(run, s := scheduler_states([run])).state == "failed"
                           and s, 60, "the scheduler to report the cancellation")
        assert run_state(run, state).error == "scheduler state CANCELLED and no result"
        sub.wait()  # what the launcher does: error.json says how the job ended
        rs = run_state(run)
        assert rs.state == "failed" and "CANCELLED" in rs.error, rs
        assert read_result(run) is None and not list(run.glob("*result*"))
        sub.submit([(checkpointable(run, data_root, 0.0), [run])])
        sub.wait()
        assert run_state(run).state == "done"
    finally:
        subprocess.run(["scancel", job.job_id], check=False, capture_output=True)
    assert outcomes(run) == [(1, "lost"), (1, "done")]
    assert_resumed_each_time(run)
    assert_same_weights(final_weights(run), reference)


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_a_cancelled_job_fails_its_launch_and_the_next_launch_resubmits_it(tmp_path: Path) -> None:
    """The whole pipeline on the real cluster: one training job is scancel'ed (held at its start, so
    the moment is certain); the launch ends with status 1 naming it and the scheduler's state; the
    next launch resubmits only that run and finishes."""
    name = f"rel-{uuid.uuid4().hex[:8]}"  # the sweep's name is the job names' prefix: only ours are touched
    out, gates = tmp_path / "out", tmp_path / "gates"
    exp = out / name
    gates.mkdir()
    (gates / "train").touch()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site_dir(tmp_path / "site")), str(REPO)]),
           "CROWDING_TEST_GATES": str(gates), "CROWDING_TEST_SWEEP_NAME": name}
    cmd = launcher("tiny", "--executor", "slurm", "--out", str(out))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env)
    try:
        wait_until(lambda: all_submitted(exp, "train", 2), 180, "both training jobs submitted")
        victim = sorted(p for p in (exp / "train").iterdir() if p.is_dir())[0]
        job_id = json.loads((victim / "submission.json").read_text())["job_id"]
        wait_until(lambda: squeue_state(job_id) == "RUNNING", 120, "the job to run (held at its start)")
        subprocess.run(["scancel", job_id], check=True)
        (gates / "train").unlink()  # the other one goes on
        first, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        for stage in ("datasets", "train", "eval"):
            subprocess.run(["scancel", "--name", f"{name}-{stage}"], check=False, capture_output=True)
    assert proc.returncode == 1, first
    assert re.search(rf"failed: .*lr=.*job {re.escape(job_id)}: .*CANCELLED", first), first
    assert read_error(victim)["type"] == "JobEndedWithoutResult" and read_result(victim) is None
    assert "CANCELLED" in sacct_states(f"{name}-train")

    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[train] 2 jobs: 1 done, 1 to submit" in again.stdout, again.stdout
    assert read_result(victim) is not None and outcomes(victim) == [(1, "done")]
    assert_table_complete(exp)


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_an_array_task_cancelled_while_pending_does_not_hang_the_launcher(
        tmp_path: Path, slurm_name: str, fast_results, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pending array task that is cancelled vanishes from sacct and squeue alike; submitit would
    wait for it forever. It ends as failed, and the scheduler query calls it missing (resubmit)."""
    monkeypatch.setattr("cluster.backends.slurm.SlurmBackend.gone_after_s", 3.0)
    runs = [tmp_path / "r0", tmp_path / "r1"]
    sub = slurm_submission(tmp_path / "logs", slurm_name, mem_gb=0.25, time_min=2, extra_sbatch=("begin=now+600",))
    jobs = sub.submit([(checkpointable(r, tmp_path, 0.0), [r]) for r in runs])
    try:
        wait_until(lambda: squeue_state(jobs[1].job_id) == "PENDING", 30, "the tasks pending")
        subprocess.run(["scancel", jobs[1].job_id], check=True)
        wait_until(lambda: squeue_state(jobs[1].job_id) == "", 30, "the task forgotten by squeue")
        assert jobs[1].job_id not in scheduler_states(runs)
        assert run_state(runs[1], scheduler_states([runs[1]])).state == "missing"
        sub.jobs = sub.jobs[1:]  # wait for the cancelled task alone first
        t0 = time.time()
        sub.wait()  # returned: before the fix, this waited forever
        assert time.time() - t0 < 60
        state = run_state(runs[1])
        assert state.state == "failed" and "has not produced any output" in state.error, state
    finally:
        subprocess.run(["scancel", jobs[0].job_id.split("_")[0]], check=False, capture_output=True)
    sub.attach([runs[0]])  # the other one, cancelled as a whole array: CANCELLED
    sub.wait()
    state = run_state(runs[0])
    assert state.state == "failed" and "CANCELLED" in state.error, state


def test_names_with_a_trailing_newline_are_refused() -> None:
    with pytest.raises(SpecError):
        tiny_sweep(name="tiny\n")
