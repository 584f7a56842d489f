"""Replicates and selection: seeds in run identity, datasets and resume; the selection rules on
hand-made candidates (ties included); a relaunch with more seeds runs only the new ones; the
per-image record of every evaluation; the precision setting (TF32 off by default)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import QUIET, Preempted, Submitted, assert_same_weights, kill_at, tiny_config

from core.layout import HITS, PLAN
from core.plan import Plan
from core.runs import write_config
from ecc.checkpoint import final_weights
from ecc.config import RunOptions, TrainConfig
from ecc.evaluate import Condition, Evaluator, read_hits, write_hits
from ecc.model import EccNet
from ecc.runtime import apply_run_options
from ecc.stimuli import normalize
from ecc.train import train
from results import table
from sweeps import launch, smoke
from sweeps.pipeline import Pipeline
from sweeps.spec import SpecError, choose

SMOKE = smoke.sweep()


# ------------------------------------------------------------------ identity and datasets
def test_seed_0_and_data_seed_0_keep_todays_identity_and_dataset() -> None:
    base = tiny_config()
    assert replace(base, data_seed=0).hash == base.hash  # data_seed == seed is the default
    assert replace(base, data_seed=0).data_seed is None
    one = replace(base, seed=1)  # before data_seed existed: seed 1 seeded the positions too
    assert one.stimulus_seed == 1 and one.train_spec().seed == 1
    replicate = replace(base, seed=1, data_seed=0)  # a sweep's replicate: shares seed 0's positions
    assert replicate.hash not in (base.hash, one.hash)
    assert replicate.train_spec() == base.train_spec() and replicate.validation_spec() == base.validation_spec()
    with pytest.raises(ValueError, match="data_seed must be an integer >= 0"):
        replace(base, data_seed=-1)


def test_sweep_seeds_share_one_training_dataset_unless_asked() -> None:
    spec = replace(SMOKE, seeds=(0, 1, 2))
    runs = spec.train_runs()
    assert len(runs) == len(SMOKE.train_runs()) * 3
    assert [r.seed for r in runs[:3]] == [0, 1, 2]
    assert {r.hash for r in runs if r.seed == 0} == {r.hash for r in SMOKE.train_runs()}  # seed 0 unchanged
    assert spec.datasets() == SMOKE.datasets()  # replicates share the datasets
    own = replace(spec, data_seed=None)
    assert len(own.datasets()) == 3 * len(SMOKE.datasets())
    with pytest.raises(SpecError, match="seeds repeat"):
        replace(SMOKE, seeds=(0, 0))
    with pytest.raises(SpecError, match="selection 'best' is not one of val/acc, train/loss, all"):
        replace(SMOKE, selection="best")


def test_launch_seeds_flag_sets_the_replicates(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert launch.main(["smoke", "--seeds", "3", "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "x 3 seeds [0, 1, 2]" in out and out.count("seed=2:") == len(SMOKE.train_runs())
    with pytest.raises(SystemExit):
        launch.main(["smoke", "--seeds", "-1", "--dry-run"])


def test_a_replicate_resumes_bitwise(tmp_path: Path) -> None:
    cfg = tiny_config(seed=1, data_seed=0)
    data = tmp_path / "data"
    reference = tmp_path / "reference"
    train(cfg, reference, data_root=data, options=QUIET)
    other = tmp_path / "seed0"
    train(tiny_config(), other, data_root=data, options=QUIET)
    assert len([p for p in data.glob("train-*") if p.is_dir()]) == 1  # one training dataset for both seeds
    assert not all(torch.equal(a, b) for a, b in zip(final_weights(reference).values(),
                                                        final_weights(other).values(), strict=True))

    import signal

    run = tmp_path / "resumed"
    old = signal.getsignal(signal.SIGUSR2)

    def handler(signum: int, frame: object) -> None:
        raise Preempted

    signal.signal(signal.SIGUSR2, handler)
    try:
        with pytest.raises(Preempted):
            train(cfg, run, data_root=data, options=QUIET, on_step=kill_at(7))
    finally:
        signal.signal(signal.SIGUSR2, old)
    train(cfg, run, data_root=data, options=QUIET)
    assert_same_weights(final_weights(run), final_weights(reference))


# ------------------------------------------------------------------ selection rules
def cand(lr: float, seed: int = 0, state: str = "done", **metrics: Any) -> dict[str, Any]:
    return {"hash": f"h{lr}-{seed}", "learning_rate": lr, "seed": seed, "state": state,
            "train/loss": metrics.get("tl"), "val/loss": metrics.get("vl"), "val/acc": metrics.get("va")}


def test_val_acc_rule_on_the_mean_over_seeds_with_ties() -> None:
    cands = [cand(0.1, 0, va=0.9, vl=0.5), cand(0.1, 1, va=0.5, vl=0.5),   # mean 0.7
             cand(0.01, 0, va=0.7, vl=0.4), cand(0.01, 1, va=0.7, vl=0.4),  # mean 0.7, lower loss: wins
             cand(0.001, 0, va=0.8, vl=0.1), cand(0.001, 1, state="failed")]  # 0.8 from one seed
    lrs, scores = choose("val/acc", cands)
    assert lrs == [0.001]  # a failed seed is left out of the mean: 0.8
    assert scores[2]["seeds_done"] == [0] and scores[0]["val/acc"] == pytest.approx(0.7)
    lrs, _ = choose("val/acc", cands[:4])
    assert lrs == [0.01]  # tie on val/acc 0.7: lower val/loss
    tie = [cand(0.1, va=0.7, vl=0.4), cand(0.01, va=0.7, vl=0.4)]
    assert choose("val/acc", tie)[0] == [0.01]  # full tie: the smaller learning rate
    assert choose("val/acc", [cand(0.1, va="nan", vl=1.0)])[0] == []  # nothing finite: no choice


def test_train_loss_rule_is_the_originals_lowest_loss_ties_to_smaller_lr() -> None:
    cands = [cand(0.1, tl=0.30, va=0.9), cand(0.01, tl=0.20, va=0.1), cand(0.001, tl=0.20, va=0.5)]
    assert choose("train/loss", cands)[0] == [0.001]  # tie 0.20: the smaller learning rate
    cands[1]["train/loss"] = 0.19
    assert choose("train/loss", cands)[0] == [0.01]  # lowest loss, whatever its accuracy
    diverged = [cand(0.1, tl=float("nan")), cand(0.01, tl=2.0)]
    assert choose("train/loss", diverged)[0] == [0.01]


def test_all_rule_evaluates_every_learning_rate_with_a_finished_run() -> None:
    cands = [cand(0.1, va=0.1), cand(0.01, state="failed"), cand(0.001, 0, state="missing"),
             cand(0.001, 1, va=0.2)]
    assert choose("all", cands)[0] == [0.1, 0.001]


def write_train_result(exp: Path, run_dir: str, **final: Any) -> None:
    folder = exp / run_dir
    folder.mkdir(parents=True, exist_ok=True)
    write_config(folder, "train", folder.name, {})  # a result counts only beside its run's config.json
    (folder / "result.json").write_text(json.dumps({"kind": "train", "hash": folder.name, "final": final}))


def test_select_with_seeds_writes_candidates_and_chosen_runs(tmp_path: Path) -> None:
    spec = replace(SMOKE, models=SMOKE.models[:1], seeds=(0, 1), selection="train/loss")
    runs = {(r.config.learning_rate, r.seed): r for r in spec.train_runs()}
    for (lr, seed), r in runs.items():
        loss = {0.1: (0.5, 0.3), 0.01: (0.35, 0.45)}[lr][seed]  # means 0.4 and 0.4: tie -> 0.01
        write_train_result(tmp_path, r.dir, **{"train/loss": loss, "val/acc": 0.5, "val/loss": 1.0})
    lines: list[str] = []
    selected = Pipeline(spec, tmp_path, executor="debug", echo=lines.append).select()
    assert selected == [(spec.models[0][0], runs[0.01, s].hash, 0.01) for s in (0, 1)]
    sel = json.loads((tmp_path / "selection.json").read_text())
    assert sel["rule_name"] == "train/loss" and "the original's rule" in sel["rule"] and "mean over seeds" in sel["rule"]
    m = sel["models"][0]
    assert m["learning_rate"] == 0.01 and [c["seed"] for c in m["chosen_runs"]] == [0, 1]
    assert len(m["candidates"]) == 4 and {c["seed"] for c in m["candidates"]} == {0, 1}
    assert [s["train/loss"] for s in m["scores"]] == pytest.approx([0.4, 0.4])
    evals = Pipeline(spec, tmp_path, executor="debug").evaluation(selected).units()
    assert {u.payload.seed for u in evals} == {0, 1}
    Plan(spec.name).write(tmp_path / PLAN)  # no jobs planned: the candidates come from selection.json
    sel_table = table.selection_table(tmp_path)
    assert list(sel_table[sel_table["chosen"]][["learning_rate", "seed"]].itertuples(index=False, name=None)) == \
        [(0.01, 0), (0.01, 1)]


# ------------------------------------------------------------------ a relaunch with more seeds
def test_a_relaunch_with_more_seeds_runs_only_the_new_ones(tmp_path: Path, submitted: Submitted,
                                                           no_figures: list[Path]) -> None:
    grid = replace(SMOKE.grid, target_eccs=(0, 80), flanker_eccs=(40,), flanker_types=(0, 1))
    one = replace(SMOKE, models=SMOKE.models[:1], learning_rates=(0.1,), grid=grid, seeds=(0,))
    exp = tmp_path / "exp"
    assert Pipeline(one, exp, executor="debug", echo=lambda s: None, progress=False).run() == 0
    first = json.loads((exp / "plan.json").read_text())
    assert [e["seed"] for e in first["eval"]] == [0] * len(first["eval"])
    done_before = {p.parent.name for p in exp.glob("*/*/result.json")}
    submitted.arrays.clear()

    two = replace(one, seeds=(0, 1))
    assert Pipeline(two, exp, executor="debug", echo=lambda s: None, progress=False).run() == 0
    seed1 = {r.hash for r in two.train_runs() if r.seed == 1}
    trained = [c.run_dir for s, _, calls in submitted.arrays if s == "train" for c in calls]
    assert {Path(d).name for d in trained} == seed1  # seed 0 is not trained again
    evaluated = {Path(d).name for s, _, calls in submitted.arrays if s == "eval" for c in calls for d in c.run_dirs}
    plan = json.loads((exp / "plan.json").read_text())
    new = {e["hash"] for e in plan["eval"] if e["seed"] == 1}
    assert evaluated == new and not evaluated & done_before
    assert not [s for s, _, _ in submitted.arrays if s == "datasets"]  # the shared dataset was built already

    df = table.collect(exp)
    assert sorted(set(df["seed"])) == [0, 1] and (df["state"] == "done").all()
    # The per-image record of every evaluation: as many bits right as n_correct.
    for _, row in df.iterrows():
        assert row["per_image"], row["run_dir"]
        result = json.loads((exp / row["run_dir"] / "result.json").read_text())
        hits = read_hits(exp / row["per_image"], int(row["n_images"]))
        assert hits.sum() == row["n_correct"] and result["per_image"]["test_images"]["first"] == row["n_images"]
    summary = (exp / "summary.csv").read_text()
    assert "seeds_done" in summary and (exp / "findings.md").is_file()


# ------------------------------------------------------------------ per-image record
def test_hits_round_trip_and_refuse_a_wrong_length(tmp_path: Path) -> None:
    hits = np.array([True, False, True, True, False, False, False, True, True], dtype=bool)
    write_hits(tmp_path / HITS, hits)
    assert (tmp_path / HITS).stat().st_size < 200  # 2 bytes of bits plus the .npy header
    assert np.array_equal(read_hits(tmp_path / HITS, 9), hits)
    with pytest.raises(Exception, match="not the 17 bits"):
        read_hits(tmp_path / HITS, 17)


def test_the_evaluator_keeps_which_images_it_got_right(tmp_path: Path) -> None:
    cfg = tiny_config(num_epochs=1)
    run = tmp_path / "run"
    train(cfg, run, data_root=tmp_path / "data", options=QUIET)
    ev = Evaluator(run, options=RunOptions(device="cpu", progress=False, threads=1), test_images=50)
    a = ev.evaluate(Condition(0.0), hits_out=tmp_path / "a.npy")
    b = ev.evaluate(Condition(0.0), hits_out=tmp_path / "b.npy")
    hits = read_hits(tmp_path / "a.npy", 50)
    assert hits.sum() == a["n_correct"] and a["per_image"]["n"] == 50 and a["seed"] == 0
    assert np.array_equal(hits, read_hits(tmp_path / "b.npy", 50))  # same images, same model: same bits
    assert a["per_image"]["test_images"] == b["per_image"]["test_images"]
    assert len(a["per_image"]["test_images"]["labels_sha1"]) == 40
    # The bits are the model's own answers, image by image.
    data = ev.spec(Condition(0.0), 50)
    from ecc import datasets

    images = datasets.generate(data)
    with torch.no_grad():
        logits = ev.model(normalize(torch.from_numpy(images.images), cfg.contrast_norm, cfg.stimulus))
    assert np.array_equal(hits, (logits.argmax(1).numpy() == images.labels))


# ------------------------------------------------------------------ precision
@pytest.mark.parametrize("precision, tf32", [("fp32", False), ("bf16", False), ("tf32", True), ("fp32", False)])
def test_precision_sets_tf32_for_convolutions_and_matmuls(precision: str, tf32: bool) -> None:
    apply_run_options(RunOptions(device="cpu", precision=precision))
    assert torch.backends.cudnn.allow_tf32 is tf32
    assert torch.backends.cuda.matmul.allow_tf32 is tf32
    assert torch.get_float32_matmul_precision() == ("high" if tf32 else "highest")


def test_fp32_is_the_default() -> None:
    assert RunOptions().precision == "fp32"
    with pytest.raises(ValueError, match="precision 'fp16' is not one of fp32, tf32, bf16"):
        RunOptions(precision="fp16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_logits_on_cpu_and_gpu_agree_in_fp32() -> None:
    """The areafactor model's central crops span ~1/1024: TF32 would keep a few levels of them.
    In fp32 (the default) a batch's logits on the GPU match the CPU's closely."""
    from ecc.stimuli import StimulusConfig

    stimulus = StimulusConfig(field_size=480, digit_height=60, flanker_height=60, crop_size=30, num_scales=6)
    cfg = TrainConfig(stimulus=stimulus, model=replace(tiny_config().model, pm="6-1-1"), contrast_norm="areafactor",
                      random_shifts=True)
    model = EccNet(cfg.model, stimulus.crop_size, seed=3)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (16, *stimulus.shape), dtype=np.uint8))
    apply_run_options(RunOptions(device="cuda", precision="fp32"))
    with torch.no_grad():
        cpu = model(normalize(x, "areafactor", stimulus))
        gpu = model.to("cuda")(normalize(x.to("cuda"), "areafactor", stimulus)).cpu()
    err = (cpu - gpu).abs().max().item()
    assert err <= 1e-4 * max(1.0, cpu.abs().max().item()), err
    assert math.isfinite(err)


def test_a_relaunch_without_seeds_keeps_the_experiments_seeds(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    exp = tmp_path / "smoke"
    exp.mkdir()
    (exp / "spec.json").write_text(json.dumps({**SMOKE.to_json(), "seeds": [0, 1, 2]}))
    assert launch.main(["smoke", "--dry-run", "--out", str(tmp_path)]) == 0
    assert "x 3 seeds [0, 1, 2]" in capsys.readouterr().out
    assert launch.main(["smoke", "--seeds", "1", "--dry-run", "--out", str(tmp_path)]) == 0  # asked: one seed
    out = capsys.readouterr().out
    assert "x 3 seeds" not in out and "seed=1" not in out
