"""Small helpers shared by several test files."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import sweeps.launch
from cluster.jobs import ChunkJob
from cluster.resources import Resources
from ecc.config import RunOptions, TrainConfig
from ecc.model import ModelConfig
from ecc.stimuli import StimulusConfig
from sweeps.spec import EvalGrid, FigureSpec, StageResources, SweepSpec

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
PYTHON = sys.executable


def wait_until(predicate: Callable[[], Any], timeout_s: float = 60, what: str = "") -> Any:
    """The first truthy value of `predicate()`, polled every 0.2 s (tests only: watching real
    processes and the real scheduler from outside)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Bitwise equal state dicts."""
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def run_notebook(nb: Any, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timeout_s: int = 120) -> None:
    """Execute a notebook (nbclient) in `folder` on a kernel reached over Unix sockets in tmp_path
    (no network port opened), its connection file and Jupyter runtime folder in tmp_path too, and
    assert that no connection file is left behind: it holds the kernel's key (before, every run
    left one in /tmp)."""
    import nbclient
    from jupyter_client import KernelManager

    runtime = tmp_path / "jupyter-runtime"
    runtime.mkdir(exist_ok=True)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))  # the kernel's own files, if it writes any
    km = KernelManager(kernel_name="python3", transport="ipc", ip=str(tmp_path / "kernel"),
                       connection_file=str(runtime / "kernel-notebook.json"))
    try:
        nbclient.NotebookClient(nb, km=km, timeout=timeout_s, resources={"metadata": {"path": str(folder)}}).execute()
    finally:
        km.cleanup_resources()
    key = km.session.key.decode()
    left = [p for d in (Path(tempfile.gettempdir()), runtime) for p in d.glob("*.json") if key in _text(p)]
    assert not left, f"connection files left behind: {left}"


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:  # another user's file, or gone meanwhile
        return ""


SITECUSTOMIZE = textwrap.dedent("""
    # Injected by the reliability/security tests (PYTHONPATH), in the launcher and in every job process.
    import os, sys, time

    def _job_stage():
        # A submitit job process runs `python -u -m submitit.core._submit <exp>/logs/<stage>`.
        try:
            argv = [a.decode() for a in open("/proc/self/cmdline", "rb").read().split(b"\\0") if a]
        except OSError:
            return None
        return os.path.basename(argv[-1]) if "submitit.core._submit" in argv else None

    _gates = os.environ.get("CROWDING_TEST_GATES")
    if _gates:  # hold each job of a stage at its start while the file <gates>/<stage> exists
        _stage = _job_stage()
        _deadline = time.time() + 600
        while _stage and os.path.exists(os.path.join(_gates, _stage)) and time.time() < _deadline:
            time.sleep(0.05)

    _audit = os.environ.get("CROWDING_TEST_AUDIT")
    if _audit:  # record network sockets and pickle reads, for tests/test_security.py
        _busy = []

        def _hook(event, args):
            if _busy:
                return
            if event in ("socket.bind", "socket.connect", "socket.sendto", "socket.getaddrinfo") or (
                    event == "socket.__new__" and args[1] != 1):  # 1: AF_UNIX (asyncio's self-pipe)
                line = f"{os.getpid()} {event} {args[1:]!r}"
            elif event == "open" and isinstance(args[0], str) and args[0].endswith((".pkl", ".pickle")) \\
                    and (args[1] is None or "r" in args[1]):
                line = f"{os.getpid()} pickle-read {args[0]}"
            else:
                return
            _busy.append(1)
            try:
                with open(_audit, "a") as f:
                    f.write(line + "\\n")
            finally:
                _busy.pop()

        sys.addaudithook(_hook)
""")


def site_dir(folder: Path) -> Path:
    """A folder with the tests' sitecustomize.py, to put first on PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder


# ================================================================== a tiny training run
# A 48 px field, the 24 px target at the centre, two 12 px crops: learnable in a few epochs.
TINY_STIMULUS = StimulusConfig(field_size=48, digit_height=24, flanker_height=24, crop_size=12, num_scales=2)
TINY_MODEL = ModelConfig(pm="2-1-1", feats_per_layer=8)
# One thread everywhere: bitwise comparisons between a subprocess and this process must not depend
# on the thread count each inherited (CPU kernels reduce in a thread-dependent order).
QUIET = RunOptions(device="cpu", progress=False, checkpoint_every=3, threads=1)


def tiny_config(**changes: Any) -> TrainConfig:
    base = dict(stimulus=TINY_STIMULUS, model=TINY_MODEL, validation_size=200, train_images=160,
                learning_rate=0.1, num_epochs=2, batch_size=32)
    return TrainConfig(**{**base, **changes})  # 5 steps per epoch


class Preempted(Exception):
    """Raised by a test's 'previous' signal handler, as submitit's exits after requeueing."""


def kill_at(step: int, signum: int = signal.SIGUSR2) -> Callable[[int], None]:
    """An on_step hook that sends this process `signum` at `step`."""
    def hook(s: int) -> None:
        if s == step:
            os.kill(os.getpid(), signum)
    return hook


# A training job slowed down by the reliability tests: 5 steps per epoch, 30 in all; seconds on one core.
PREEMPT_CFG = tiny_config(num_epochs=6)
STEPS = 30
# One thread in the jobs and in the reference: the same arithmetic, so bitwise the same weights.
JOB_OPTIONS = RunOptions(device="cpu", progress=False, checkpoint_every=2, threads=1)


# ================================================================== what a launch did
@dataclass
class Launch:
    """A launch's exit status and the lines it printed."""

    rc: int
    lines: list[str]

    def grep(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]


@dataclass
class Submitted:
    """What the pipeline handed to Submission.submit: (stage, backend, calls) per array (the
    `submitted` fixture in conftest.py)."""

    arrays: list[tuple[str, str, list[Any]]]

    def stage(self, stage: str) -> list[list[Any]]:
        return [calls for s, _, calls in self.arrays if s == stage]

    def run_dirs(self, stage: str) -> list[list[str]]:
        """Per job of the stage, the run folders it fills (by their name)."""
        return [[Path(d).name for d in (c.run_dirs if isinstance(c, ChunkJob) else [c.run_dir])]
                for calls in self.stage(stage) for c in calls]


# ================================================================== a tiny sweep, as plain Python
TINY_FIELD = StimulusConfig(field_size=240, digit_height=40, flanker_height=40, crop_size=16, num_scales=4)


def tiny_sweep(quick: bool = False, **changes: Any) -> SweepSpec:
    """The smallest whole experiment: 2 datasets, 1 model x 2 learning rates, 4 conditions in 2 eval jobs."""
    model = ModelConfig(pm="4-1-1-1", feats_per_layer=8)
    base = TrainConfig(stimulus=TINY_FIELD, model=model, random_shifts=True, num_epochs=2, batch_size=32,
                       train_images=128, validation_size=100)
    small = Resources(cpus=1, mem_gb=1, time_min=10)
    fields: dict[str, Any] = dict(
        name=os.environ.get("CROWDING_TEST_SWEEP_NAME", "tiny"), models=(("4-1-1-1", base),), learning_rates=(0.1, 0.01),
        grid=EvalGrid(target_eccs=(0.0, 40.0), flanker_eccs=(80.0,), flanker_types=(0, 1), test_images=32),
        figures=FigureSpec(spacings=(40.0, 80.0), center_target=0.0, far_target=40.0),
        resources=StageResources(datasets=small, train=small, eval=small), conditions_per_job=2,
        description="reliability tests")
    return SweepSpec(**{**fields, **changes})


TEST_SWEEPS: dict[str, Callable[[bool], SweepSpec]] = {"tiny": tiny_sweep}


def launch_main(argv: Sequence[str]) -> int:
    """`python -m sweeps.launch`, with the tests' sweeps added to the ones in sweeps/."""
    real = sweeps.launch.available_sweeps
    sweeps.launch.available_sweeps = lambda: {**real(), **TEST_SWEEPS}
    try:
        return sweeps.launch.main(list(argv))
    finally:
        sweeps.launch.available_sweeps = real


LAUNCHER = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(TESTS)!r})
    from helpers import launch_main
    sys.exit(launch_main(sys.argv[1:]))
""")


def launcher(*args: str) -> list[str]:
    """Command line of a launcher process (unbuffered, so its lines arrive as they are printed)."""
    return [PYTHON, "-u", "-c", LAUNCHER, *args]
