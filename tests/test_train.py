"""Training: config checks, learning, bitwise resume, deferred signals, corrupt checkpoints, the CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import PYTHON, QUIET, REPO, TINY_STIMULUS, Preempted, assert_same_weights, kill_at, tiny_config

from core.atomic import read_jsonl
from core.identity import from_jsonable, to_jsonable
from core.layout import CHECKPOINT, CONFIG, METRICS, RESULT
from ecc.checkpoint import final_weights, load_checkpoint
from ecc.config import TrainConfig, read_config
from ecc.environment import MALLOC_ENV, job_env
from ecc.stimuli import InvalidPlacement, StimulusConfig
from ecc.train import best_epoch, main, train


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> dict[str, torch.Tensor]:
    """Final weights of the uninterrupted tiny run."""
    run = tmp_path_factory.mktemp("reference")
    train(tiny_config(), run, data_root=data_root, options=QUIET)
    return final_weights(run)


@pytest.fixture
def previous_handler():
    """Install a Python SIGUSR2 handler (the 'previous' one train() must forward to); restore after."""
    calls: list[tuple[int, object]] = []
    old = signal.getsignal(signal.SIGUSR2)
    yield calls, old
    signal.signal(signal.SIGUSR2, old)


# ------------------------------------------------------------------------------- config
def test_config_names_bad_values() -> None:
    with pytest.raises(ValueError, match=r"pm 11-1-1-1-1 starts with 11 scales but --num_scales is 6"):
        TrainConfig(stimulus=replace(StimulusConfig(), num_scales=6))
    with pytest.raises(InvalidPlacement, match=r"target at eccentricity 5000"):
        TrainConfig(target_ecc=5000)
    with pytest.raises(InvalidPlacement, match=r"overlaps the target"):
        TrainConfig(flanker_type=1, flanker_ecc=60)
    with pytest.raises(InvalidPlacement, match=r"spacing 1900 .*never fit"):
        TrainConfig(random_shifts=True, flanker_type=2, flanker_ecc=1900)
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1, got 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match=r"contrast_norm 'max' is not one of None, areafactor"):
        TrainConfig(contrast_norm="max")
    with pytest.raises(ValueError, match=r"learning_rate must be > 0"):
        TrainConfig(learning_rate=0.0)
    # Random shifts ignore target_ecc's position but keep the flanker spacing.
    TrainConfig(random_shifts=True, target_ecc=0, flanker_type=1, flanker_ecc=240)


def test_config_specs_hash_and_json() -> None:
    wide = replace(TINY_STIMULUS, field_size=96)
    cfg = tiny_config(stimulus=wide, random_shifts=True, flanker_type=1, flanker_ecc=30.0, seed=3)
    tr, va = cfg.train_spec(), cfg.validation_spec()
    assert (tr.split, tr.limit, va.split, va.limit) == ("train", 160, "validation", 0)
    assert tr.stimulus == cfg.stimulus and tr.parity == "even" and tr.random_shifts and tr.seed == 3
    assert tr.flanker_type == 1 and tr.flanker_ecc == 30.0 and va.validation_size == 200
    assert cfg.hash == tiny_config(stimulus=wide, random_shifts=True, flanker_type=1, flanker_ecc=30.0, seed=3).hash
    assert cfg.hash != replace(cfg, seed=4).hash
    assert from_jsonable(TrainConfig, json.loads(json.dumps(to_jsonable(cfg)))) == cfg
    assert from_jsonable(TrainConfig, to_jsonable(TrainConfig())).stimulus.chevron == float("inf")


def test_best_epoch_ties() -> None:
    m = [{"epoch": 1, "val/acc": 0.5, "val/loss": 1.0}, {"epoch": 2, "val/acc": 0.7, "val/loss": 0.9},
         {"epoch": 3, "val/acc": 0.7, "val/loss": 0.8}, {"epoch": 4, "val/acc": 0.6, "val/loss": 0.1}]
    assert best_epoch(m) == 3


# ------------------------------------------------------------------------------- runtime
def test_job_env() -> None:
    assert job_env() == MALLOC_ENV and MALLOC_ENV["MALLOC_MMAP_MAX_"] == "0"
    assert job_env(shared_cpus=True)["OMP_WAIT_POLICY"] == "PASSIVE"
    assert all(isinstance(v, str) for v in job_env(True).values())


# ------------------------------------------------------------------------------- training
def test_loss_falls_and_files(tmp_path: Path, data_root: Path) -> None:
    cfg = tiny_config(num_epochs=6, train_images=320)  # 10 steps per epoch
    result = train(cfg, tmp_path, data_root=data_root, options=QUIET)
    metrics = read_jsonl(tmp_path / METRICS)
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    assert [m["step"] for m in metrics] == [10, 20, 30, 40, 50, 60]
    losses = [m["train/loss"] for m in metrics]
    assert losses[-1] < losses[0] - 0.2, losses  # chance is ln 5 = 1.61
    assert metrics[-1]["val/acc"] > 0.4, metrics
    for m in metrics:
        assert set(m) == {"epoch", "step", "train/loss", "train/acc", "val/loss", "val/acc", "images_per_s", "time"}
    assert result["kind"] == "train" and result["hash"] == cfg.hash and result["steps"] == 60
    assert result["epochs"] == 6 and result["device"] == "cpu" and result["images_per_s"] > 0
    assert result["final"] == {k: metrics[-1][k] for k in ("train/loss", "train/acc", "val/loss", "val/acc")}
    assert result["best_epoch"] == best_epoch(metrics)
    assert json.loads((tmp_path / RESULT).read_text()) == json.loads(json.dumps(result))
    assert read_config(tmp_path) == cfg
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=True)  # tensors and plain values only
    assert (ckpt["epoch"], ckpt["batch"], ckpt["step"]) == (6, 0, 60)
    # A finished run answers with its result without training again.
    assert train(cfg, tmp_path, data_root=data_root, options=QUIET) == json.loads(json.dumps(result))
    assert len(read_jsonl(tmp_path / METRICS)) == 6


def test_folder_of_another_run_is_refused(tmp_path: Path, data_root: Path) -> None:
    (tmp_path / CONFIG).write_text(json.dumps({"kind": "train", "hash": "0123456789ab", "config": {}}))
    with pytest.raises(ValueError, match="holds another run"):
        train(tiny_config(), tmp_path, data_root=data_root, options=QUIET)


@pytest.mark.parametrize("stop", [3, 5, 7])  # mid-epoch (also a periodic checkpoint), epoch end, mid-epoch
def test_deferred_signal_then_bitwise_resume(tmp_path: Path, data_root: Path, reference, previous_handler,
                                             stop: int) -> None:
    calls, _ = previous_handler
    seen: list[int] = []

    def handler(signum: int, frame: object) -> None:
        calls.append((signum, frame))
        seen.append(load_checkpoint(tmp_path / CHECKPOINT)["step"])  # written before we are called
        raise Preempted

    signal.signal(signal.SIGUSR2, handler)
    with pytest.raises(Preempted):
        train(tiny_config(), tmp_path, data_root=data_root, options=QUIET, on_step=kill_at(stop))
    assert calls == [(signal.SIGUSR2, None)] and seen == [stop]
    assert signal.getsignal(signal.SIGUSR2) is handler  # restored after train() left
    assert not (tmp_path / RESULT).exists()
    assert len(read_jsonl(tmp_path / METRICS)) == stop // 5

    resumed: list[int] = []
    result = train(tiny_config(), tmp_path, data_root=data_root, options=QUIET, on_step=resumed.append)
    assert resumed == list(range(stop + 1, 11))  # only the steps left, not a restart
    assert result["steps"] == 10 and len(calls) == 1
    assert_same_weights(final_weights(tmp_path), reference)
    assert [m["epoch"] for m in read_jsonl(tmp_path / METRICS)] == [1, 2]


def test_signal_to_a_returning_or_ignoring_handler_continues(tmp_path: Path, data_root: Path, reference,
                                                             previous_handler) -> None:
    calls, _ = previous_handler
    steps: list[int] = []

    def handler(signum: int, frame: object) -> None:
        calls.append((signum, frame))
        steps.append(load_checkpoint(tmp_path / "a" / CHECKPOINT)["step"])

    signal.signal(signal.SIGUSR2, handler)
    train(tiny_config(), tmp_path / "a", data_root=data_root, options=QUIET, on_step=kill_at(4))
    assert calls == [(signal.SIGUSR2, None)] and steps == [4]
    assert_same_weights(final_weights(tmp_path / "a"), reference)

    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    train(tiny_config(), tmp_path / "b", data_root=data_root, options=QUIET, on_step=kill_at(4))
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN
    assert_same_weights(final_weights(tmp_path / "b"), reference)


def test_sigterm_with_default_handler_terminates_then_resumes(tmp_path: Path, data_root: Path, reference) -> None:
    """A real process: SIGTERM (default action) at step 6 -> checkpoint, then the process dies by it."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO / "tests")!r})
        from helpers import tiny_config, QUIET
        from ecc.train import train
        def hook(step):
            if step == 6:
                os.kill(os.getpid(), signal.SIGTERM)
        train(tiny_config(), {str(tmp_path)!r}, data_root={str(data_root)!r}, options=QUIET, on_step=hook)
        print("not reached")
    """)
    proc = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert "not reached" not in proc.stdout
    assert load_checkpoint(tmp_path / CHECKPOINT)["step"] == 6
    resumed: list[int] = []
    train(tiny_config(), tmp_path, data_root=data_root, options=QUIET, on_step=resumed.append)
    assert resumed == [7, 8, 9, 10]
    assert_same_weights(final_weights(tmp_path), reference)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing_keys", "other_run"])
def test_corrupt_checkpoint_is_set_aside_not_used(tmp_path: Path, data_root: Path, reference, previous_handler,
                                                  caplog: pytest.LogCaptureFixture, damage: str) -> None:
    def stop(signum: int, frame: object) -> None:
        raise Preempted

    signal.signal(signal.SIGUSR2, stop)
    with pytest.raises(Preempted):
        train(tiny_config(), tmp_path, data_root=data_root, options=QUIET, on_step=kill_at(7))
    path = tmp_path / CHECKPOINT
    good = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a checkpoint")
    elif damage == "truncated":
        path.write_bytes(good[:len(good) // 2])
    elif damage == "missing_keys":
        ckpt = torch.load(path, weights_only=True)
        torch.save({k: v for k, v in ckpt.items() if k != "optimizer"}, path)
    else:
        ckpt = torch.load(path, weights_only=True)
        torch.save({**ckpt, "hash": "0123456789ab"}, path)
    damaged = path.read_bytes()

    steps: list[int] = []
    with caplog.at_level("WARNING", logger="ecc.checkpoint"):
        result = train(tiny_config(), tmp_path, data_root=data_root, options=QUIET, on_step=steps.append)
    assert steps == list(range(1, 11))
    aside = list(tmp_path.glob(f"{CHECKPOINT}.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == damaged  # kept, renamed
    assert any("from scratch" in r.message for r in caplog.records)
    # Trained from scratch: the same weights and metrics as an uninterrupted run.
    assert result["steps"] == 10
    assert_same_weights(final_weights(tmp_path), reference)
    metrics = read_jsonl(tmp_path / METRICS)
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert list(tmp_path.glob(f"{METRICS}.stale-*"))  # the old epoch-1 line was kept aside


# ------------------------------------------------------------------------------- CLI
def test_cli_runs_the_original_example(tmp_path: Path) -> None:
    original = ["--parity=even", "--random_shift", "--learning_rate=0.01", "--pm=11-1-1-1-1", "--num_scales=11",
                "--total_pool=True", "--train_dir=experiments/demo-experiment/gen", "--contrast_norm=None",
                "--model_name=11-1-1-1-1_total_pool_contrast_None_lr0.01"]
    smaller = ["--field_size=240", "--crop_size=16", "--digit_height=40", "--flanker_height=40", "--num_epochs=1",
               "--train_images=96", "--validation_size=100", "--batch_size=64", "--feats_per_layer=4", "--device=cpu"]
    proc = subprocess.run([PYTHON, "-m", "ecc.train", *original, *smaller], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    gen = tmp_path / "experiments/demo-experiment/gen"
    run = gen / "trained/11-1-1-1-1_total_pool_contrast_None_lr0.01"
    result = json.loads((run / RESULT).read_text())
    cfg = from_jsonable(TrainConfig, result["config"])
    assert cfg.random_shifts and cfg.learning_rate == 0.01 and cfg.model.pm == "11-1-1-1-1"
    assert cfg.stimulus.num_scales == 11 and cfg.model.total_pool and cfg.contrast_norm == "None"
    assert result["steps"] == 2 and len(read_jsonl(run / METRICS)) == 1
    assert list((gen / "data").glob("train-*/images.npy")) and list((gen / "data").glob("validation-*/images.npy"))
    assert "done: train/acc" in proc.stdout


def test_cli_usage_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([PYTHON, "-m", "ecc.train", "--pm=11-1-1", "--num_scales=6",
                           f"--train_dir={tmp_path}"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "python -m ecc.train: error: pm 11-1-1 starts with 11 scales but --num_scales is 6; the first number of "
        "pm must equal --num_scales (see --help)"]
    assert not (tmp_path / "trained").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--contrast_norm=max"], "'max'"),
    (["--flanker_type=3"], "3"),
    (["--learning_rate=fast"], "'fast'"),
    (["--target_ecc=5000"], "5000"),
    (["--train_ecc=5000"], "5000"),
    (["--pm=11-12-1"], "11 -> 12"),
    (["--batch_size=0"], "got 0"),
    (["--random_shifts=maybe"], "'maybe'"),
])
def test_cli_bad_values_are_named(argv: list[str], needle: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_cli_help_lists_the_original_flags(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("parity", "random_shifts", "learning_rate", "pm", "num_scales", "total_pool", "contrast_norm",
                 "chevron", "flanker_dset", "train_dir", "model_name", "num_epochs", "batch_size", "fovea",
                 "crop_size", "field_size", "digit_height", "flanker_height", "target_ecc", "train_ecc",
                 "flanker_ecc", "flanker_type", "validation_size", "conv_kernel", "pool_kernel", "feats_per_layer",
                 "pool_stride", "train_images", "seed", "device", "precision", "checkpoint_every", "mnist"):
        assert f"--{flag}" in out, flag


def test_progress_lines_and_progress_json_without_a_terminal(tmp_path: Path, data_root: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A job's log is no terminal: it still gets a status line per interval (step, epoch, img/s,
    last val/acc) and one per epoch, and progress.json holds the latest figures for --status."""
    cfg = tiny_config(num_epochs=2)
    options = replace(QUIET, progress=True, progress_interval=1e-6)  # a status line every step
    train(cfg, tmp_path, data_root=data_root, options=options)
    lines = capsys.readouterr().out.splitlines()
    metrics = read_jsonl(tmp_path / METRICS)
    total = metrics[-1]["step"]
    status = [line for line in lines if line.startswith("step ")]
    assert len(status) == total, lines
    assert re.fullmatch(r"step 1/\d+ epoch 1/2 loss [\d.]+ acc [\d.]+, \d+ img/s, last val/acc -", status[0])
    assert status[-1].startswith(f"step {total}/{total} epoch 2/2 ")
    assert status[-1].endswith(f", last val/acc {metrics[0]['val/acc']:.4f}")
    assert sum(line.startswith("epoch ") and " val/acc " in line for line in lines) == 2
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert (progress["step"], progress["total_steps"], progress["epoch"], progress["num_epochs"]) == (total, total, 2, 2)
    assert progress["val/acc"] == metrics[-1]["val/acc"] and progress["images_per_s"] > 0
