"""Evaluation: conditions, counting every test image, one model load for many conditions, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import ecc.evaluate as ev
from ecc import datasets
from ecc.checkpoint import final_weights
from ecc.config import RunOptions, TrainConfig
from ecc.evaluate import Condition, Evaluator, eval_hash
from ecc.model import ModelConfig, build
from ecc.stimuli import InvalidPlacement, StimulusConfig, normalize
from ecc.train import train

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
STIMULUS = StimulusConfig(field_size=96, digit_height=24, flanker_height=24, crop_size=12, num_scales=2)
CPU = RunOptions(device="cpu", progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained run at TRAIN_DIR/trained/tiny (one epoch: only its weights matter here)."""
    train_dir = tmp_path_factory.mktemp("train_dir")
    cfg = TrainConfig(stimulus=STIMULUS, model=ModelConfig(pm="2-1-1", feats_per_layer=8), validation_size=100,
                      train_images=96, num_epochs=1, batch_size=32)
    run = train_dir / "trained" / "tiny"
    train(cfg, run, data_root=train_dir / "data", options=CPU)
    return run


# ------------------------------------------------------------------------------- conditions
def test_condition_canonical_label_spacing() -> None:
    a = Condition(240, 999, 0)
    assert a.canonical() == Condition(240.0, None, 0) and a.label == "a" and a.spacing is None
    assert Condition(240, 120, 1).label == "xa" and Condition(240, 360, 1).label == "ax"
    assert Condition(-240, -120, 1).label == "xa" and Condition(0, -120, 1).label == "ax"
    assert Condition(240, 120, 1).spacing == 120.0
    # Type 2: the mirror of a flanker about the target is the other flanker; name the outer one.
    assert Condition(240, 120, 2).canonical() == Condition(240, 360, 2)
    assert Condition(240, 360, 2).canonical() == Condition(240, 360, 2)
    assert Condition(-240, -120, 2).canonical() == Condition(-240, -360, 2)
    assert Condition(0, -120, 2).canonical() == Condition(0, 120, 2)
    assert Condition(0, 120, 2).label == "xax" and Condition(0, 120, 2).spacing == 120.0
    assert isinstance(Condition(240).target_ecc, float)
    assert eval_hash("m", Condition(240, 120, 2)) == eval_hash("m", Condition(240.0, 360.0, 2))
    assert eval_hash("m", Condition(240)) != eval_hash("m", Condition(240), test_images=10)
    assert eval_hash("m", Condition(240)) != eval_hash("n", Condition(240))
    # The pipeline's folder names are the same identity.
    spec = pytest.importorskip("sweeps.spec")
    run = spec.EvalRun("model", "m", 0.1, Condition(240, 360, 2), 10)
    assert run.hash == eval_hash("m", Condition(240, 120, 2), 10)


def test_eval_identity_keeps_existing_names_and_a_new_field_renames_nothing() -> None:
    # Pinned: the folder names of every evaluation made so far (ecc.conditions.IDENTITY_FIELDS).
    assert eval_hash("m", Condition(240, 360, 1), 400) == "512975bcdb8c"
    assert eval_hash("m", Condition(0.0, 120.0, 2, "omniglot")) == "8e6546b91d0a"
    assert eval_hash("m", Condition(0.0)) == "66f1113c3e40"

    @dataclass(frozen=True)
    class Wider(Condition):  # a field added later, with a default
        contrast: float = 1.0

    assert eval_hash("m", Wider(240, 360, 1)) == eval_hash("m", Condition(240, 360, 1))
    assert eval_hash("m", Wider(240, 360, 1, contrast=0.5)) != eval_hash("m", Condition(240, 360, 1))


def test_condition_check_refuses_unrenderable() -> None:
    cfg = StimulusConfig()
    Condition(720, 600, 1).check(cfg)
    with pytest.raises(InvalidPlacement, match="overlaps"):
        Condition(0, 60, 1).check(cfg)
    with pytest.raises(InvalidPlacement, match="leaves the 1920 px field"):
        Condition(780, 960, 1).check(cfg)
    with pytest.raises(InvalidPlacement, match="needs a flanker_ecc"):
        Condition(0, None, 1)
    with pytest.raises(InvalidPlacement, match="flanker_type 3"):
        Condition(0, 120, 3)


# ------------------------------------------------------------------------------- evaluator
def test_every_image_counts(trained: Path) -> None:
    evaluator = Evaluator(trained, options=CPU, batch_size=8, test_images=37)
    cond = Condition(0.0)
    result = evaluator.evaluate(cond)
    assert result["n_images"] == 37  # 4 full batches of 8 and the last 5
    # Direct computation in one batch.
    data = datasets.generate(evaluator.spec(cond.canonical()))
    cfg = evaluator.config
    model = build(cfg.model, cfg.stimulus.crop_size)
    model.load_state_dict(final_weights(trained))
    with torch.no_grad():
        logits = model(normalize(torch.from_numpy(np.array(data.images)), cfg.contrast_norm, cfg.stimulus))
    n_correct = int((logits.argmax(1).numpy() == data.labels).sum())
    assert result["n_correct"] == n_correct and result["accuracy"] == n_correct / 37
    assert result["kind"] == "eval" and result["model_hash"] == cfg.hash and result["label"] == "a"
    assert result["condition"] == {"target_ecc": 0.0, "flanker_ecc": None, "flanker_type": 0, "flanker_dset": "MNIST"}
    assert result["hash"] == eval_hash(cfg.hash, cond, 37) and result["wall_time_s"] >= 0


def test_many_conditions_one_model_load(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads = []
    real_load = torch.load

    def counting_load(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    evaluator = Evaluator(trained, options=CPU, batch_size=16, test_images=20)
    conditions = [Condition(0), Condition(30, 0, 1), Condition(0, 30, 1), Condition(0, -30, 2)]
    outs = [tmp_path / f"{i}.json" for i in range(len(conditions))]
    results = [evaluator(c, out=o) for c, o in zip(conditions, outs, strict=True)]  # as sweeps.tasks does
    results.append(evaluator(Condition(0), test_images=11))  # with its own limit
    assert loads == [True]  # one load, tensors only
    assert [r["label"] for r in results] == ["a", "xa", "ax", "xax", "a"]
    assert results[3]["condition"]["flanker_ecc"] == 30.0  # canonical
    assert [r["n_images"] for r in results] == [20, 20, 20, 20, 11]
    assert [json.loads(o.read_text()) for o in outs] == json.loads(json.dumps(results[:4]))


def test_invalid_condition_refused_before_any_work(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    evaluator = Evaluator(trained, options=CPU, test_images=10)

    def no_work(*args, **kwargs):
        raise AssertionError("stimuli generated for an invalid condition")

    monkeypatch.setattr(datasets, "generate", no_work)
    with pytest.raises(InvalidPlacement, match="overlaps the target"):
        evaluator.evaluate(Condition(0, 10, 1))
    with pytest.raises(InvalidPlacement, match="leaves the 96 px field"):
        evaluator(Condition(40, 70, 1))


def test_cache_and_memory_agree(trained: Path, tmp_path: Path) -> None:
    cond = Condition(20, -10, 1)
    memory = Evaluator(trained, options=CPU, test_images=25).evaluate(cond)
    cached = Evaluator(trained, options=CPU, test_images=25, data_root=tmp_path).evaluate(cond)
    assert list(tmp_path.glob("test-*/images.npy"))
    assert {k: v for k, v in cached.items() if k != "wall_time_s"} == \
        {k: v for k, v in memory.items() if k != "wall_time_s"}


def test_unfinished_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="has not finished training"):
        Evaluator(tmp_path, options=CPU)


# ------------------------------------------------------------------------------- CLI
def test_cli_evaluates_one_condition(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    proc = subprocess.run(
        [PYTHON, "-m", "ecc.evaluate", f"--train_dir={trained.parent.parent}", "--model_name=tiny",
         "--target_ecc=0", "--flanker_ecc=30", "--flanker_type=2", "--batch_size=8", "--test_images=21",
         "--device=cpu", f"--out={out}"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result == json.loads(proc.stdout)
    assert result["n_images"] == 21 and result["label"] == "xax" and 0 <= result["n_correct"] <= 21


@pytest.mark.parametrize("argv, needle", [
    (["--flanker_type=1", "--flanker_ecc=10"], "flanker at eccentricity 10 overlaps"),
    (["--target_ecc=500"], "target at eccentricity 500"),
    (["--flanker_type=1"], "needs a flanker_ecc"),
    (["--model_name=nope"], "nope"),
])
def test_cli_usage_errors(trained: Path, argv: list[str], needle: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        ev.main([f"--train_dir={trained.parent.parent}", "--model_name=tiny", "--device=cpu", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_an_evaluation_identity_says_how_its_flanker_set_is_drawn() -> None:
    """notMNIST and Omniglot are drawn at 85/120 of the digits' height (Omniglot trimmed): their
    evaluations are not the ones made when they were drawn like the digits; MNIST's and letters'
    identities are as they were."""
    from core.identity import digest

    for dset in ("MNIST", "letters", "notMNIST", "omniglot"):
        cond = Condition(0.0, 120.0, 2, dset)
        before = digest({"model": "m", "condition": cond.canonical(), "test_images": 0})
        assert (eval_hash("m", cond) == before) == (dset in ("MNIST", "letters")), dset
    assert eval_hash("m", Condition(0.0, 120.0, 2, "notMNIST")) != eval_hash("m", Condition(0.0, 120.0, 2, "omniglot"))
    assert eval_hash("m", Condition(0.0, None, 0, "notMNIST")) == eval_hash("m", Condition(0.0))  # no flankers
