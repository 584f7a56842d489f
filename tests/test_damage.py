"""Damage is repaired or reported, never silently absorbed (issue 16): a run folder that lost its
config.json, a damaged spec.json, a damaged or missing per-image record (correct.npy), and a result
the table would reject. Each is driven through the launcher in-process (debug executor) on a tiny
sweep; docs/reliability.md ("Damage") lists them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.atomic import atomic_write_json, read_json
from core.hits import read_hits
from core.layout import HITS
from core.runs import run_state
from ecc.config import TrainConfig
from ecc.evaluate import Evaluator
from ecc.model import ModelConfig
from ecc.stimuli import StimulusConfig
from ecc.train import train
from results import plots
from results import table as rt
from sweeps import launch, tasks
from sweeps.pipeline import Pipeline
from sweeps.spec import EvalGrid, FigureSpec, SweepSpec

FIELD = StimulusConfig(field_size=240, digit_height=40, flanker_height=40, crop_size=16, num_scales=4)


def tiny(quick: bool = False, seeds: tuple[int, ...] = (0,)) -> SweepSpec:
    """1 model x 2 learning rates, 4 conditions in 2 eval jobs, 32 test images each."""
    base = TrainConfig(stimulus=FIELD, model=ModelConfig(pm="4-1-1-1", feats_per_layer=8), random_shifts=True,
                       num_epochs=2, batch_size=32, train_images=128, validation_size=100)
    return SweepSpec(name="damage", models=(("tiny", base),), learning_rates=(0.1, 0.01), seeds=seeds,
                     grid=EvalGrid(target_eccs=(0.0, 40.0), flanker_eccs=(80.0,), flanker_types=(0, 1), test_images=32),
                     figures=FigureSpec(spacings=(40.0, 80.0), center_target=0.0, far_target=40.0),
                     conditions_per_job=2)


def add_tiny(m: pytest.MonkeyPatch) -> None:
    """`python -m sweeps.launch damage` knows the tiny sweep; no figures (seconds per launch)."""
    real = launch.available_sweeps
    m.setattr(launch, "available_sweeps", lambda: {**real(), "damage": tiny})
    m.setattr(plots, "draw_all", lambda *args, **kwargs: [])


@pytest.fixture(autouse=True)
def sweeps_here(monkeypatch: pytest.MonkeyPatch) -> None:
    add_tiny(monkeypatch)


def relaunch(out: Path, *extra: str) -> int:
    try:
        return launch.main(["damage", "--executor", "debug", "--out", str(out), *extra])
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else 1


def pipeline(exp: Path) -> Pipeline:
    return Pipeline(tiny(), exp, executor="debug", echo=lambda _: None, progress=False)


def states(exp: Path) -> dict[str, dict[str, str]]:
    """Per stage, each run folder's state (the states --status counts)."""
    p = pipeline(exp)
    return {stage.name: {run.name: s.state for run, s in p.states(units, stage.kind).items()}
            for stage, units in p.planned()}


def all_done(exp: Path) -> bool:
    return all(state == "done" for stage in states(exp).values() for state in stage.values())


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as m:
        add_tiny(m)
        assert relaunch(out) == 0
    yield out / "damage"


@pytest.fixture
def exp(finished: Path, tmp_path: Path) -> Path:
    """A private copy of the finished experiment, at <tmp>/damage."""
    copy = tmp_path / "damage"
    shutil.copytree(finished, copy, ignore=shutil.ignore_patterns("*.lock"))
    return copy


def evals(exp: Path) -> list[Path]:
    return [exp / e["dir"] for e in json.loads((exp / "plan.json").read_text())["eval"]]


def chosen(exp: Path) -> Path:
    return exp / "train" / json.loads((exp / "selection.json").read_text())["models"][0]["chosen"]


# ------------------------------------------------------------------ a run folder deleted while its job runs
def test_a_folder_deleted_while_its_job_runs_is_not_done_and_a_relaunch_redoes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The training job's folder is deleted mid-run: the job recreates it holding a result and no
    config.json. Before: the run counted done and every evaluation of it failed, relaunch after relaunch."""
    victim = tiny().train_runs()[0]

    def train_run(cfg: TrainConfig, run_dir: str, data_root: str, *args: Any) -> dict[str, Any]:
        def on_step(step: int) -> None:
            if cfg.hash == victim.hash and step == 2:
                shutil.rmtree(run_dir)  # an `rm -r` of the run folder while the job trains
        return train(cfg, run_dir, data_root=data_root, on_step=on_step)

    monkeypatch.setattr(tasks, "train_run", train_run)
    rc = relaunch(tmp_path)
    exp = tmp_path / "damage"
    run = exp / victim.dir
    assert (run / "result.json").is_file() and not (run / "config.json").exists()
    state = run_state(run, kind="train")
    assert rc == 1 and state.state == "failed" and "config.json is missing" in state.error
    monkeypatch.undo()
    add_tiny(monkeypatch)

    assert relaunch(tmp_path) == 0  # the run is submitted again: its config.json back, its result counts
    assert read_json(run / "config.json")["hash"] == victim.hash
    assert all_done(exp)
    Evaluator(run)  # its weights load (they need config.json)


def test_a_result_beside_no_config_is_not_done(exp: Path) -> None:
    """A finished training run whose config.json was lost: not done; the relaunch redoes it and
    its evaluations (which need config.json) run again."""
    run = chosen(exp)
    (run / "config.json").unlink()
    for e in evals(exp)[:2]:
        shutil.rmtree(e)  # evaluations still to do: before, each failed for want of config.json
    assert states(exp)["train"][run.name] == "failed"
    assert relaunch(exp.parent) == 0
    assert (run / "config.json").is_file() and all_done(exp)


# ------------------------------------------------------------------ a damaged spec.json
@pytest.mark.parametrize("damage", ['{"name": "damage", "seeds": [0, 1', '{"name": "damage", "seeds": "three"}', "[]"])
def test_a_damaged_spec_json_is_refused_naming_the_seeds_to_pass(damage: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A 3-seed experiment whose spec.json is damaged: before, a relaunch ran it with 1 seed and
    overwrote spec.json. Now exit 2, one line naming the file and `--seeds 3`; nothing written."""
    exp = tmp_path / "damage"
    three = tiny(seeds=(0, 1, 2))
    p = Pipeline(three, exp, executor="debug")
    for u in p.train.units():
        p.train.write_config(u)
    (exp / "spec.json").write_text(damage)
    before = sorted(str(f) for f in exp.rglob("*"))
    for extra in ((), ("--dry-run",), ("--status",)):
        assert relaunch(tmp_path, *extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(exp / "spec.json") in err[0] and "--seeds 3" in err[0], err
        assert (exp / "spec.json").read_text() == damage
        assert sorted(str(f) for f in exp.rglob("*")) == before
    assert relaunch(tmp_path, "--seeds", "3", "--dry-run") == 0  # what the message says to pass
    assert "x 3 seeds [0, 1, 2]" in capsys.readouterr().out


# ------------------------------------------------------------------ a damaged per-image record
def test_a_damaged_truncated_or_deleted_per_image_record_is_redone(exp: Path) -> None:
    """correct.npy is what pairs conditions image by image: before, a bad one silently switched the
    finding to the unpaired interval and was never redone. Now the evaluation is not done."""
    deleted, truncated, flipped = evals(exp)[:3]
    (deleted / HITS).unlink()
    (truncated / HITS).write_bytes((truncated / HITS).read_bytes()[:-2])
    raw = bytearray((flipped / HITS).read_bytes())
    raw[-1] ^= 0x01  # one image's bit: the record no longer counts n_correct
    (flipped / HITS).write_bytes(bytes(raw))
    now = states(exp)["eval"]
    assert [now[d.name] for d in (deleted, truncated, flipped)] == ["failed"] * 3
    df = rt.collect(exp).set_index("hash")
    assert all("per-image record" in df.loc[d.name, "error"] for d in (deleted, truncated, flipped))

    assert relaunch(exp.parent) == 0
    for d in (deleted, truncated, flipped):
        result = read_json(d / "result.json")
        assert int(read_hits(d / HITS, result["n_images"]).sum()) == result["n_correct"]
    df = rt.collect(exp)
    assert (df["state"] == "done").all() and (df["per_image"] != "").all()


# ------------------------------------------------------------------ a result the table rejects
def tamper(path: Path, **changes: Any) -> None:
    result = read_json(path / "result.json")
    for key, value in changes.items():
        if "." in key:  # "final.val/acc"
            outer, inner = key.split(".")
            result[outer] = {**result[outer], inner: value}
        else:
            result[key] = value
    atomic_write_json(path / "result.json", result)


def test_a_result_the_table_rejects_is_not_done_the_launcher_reruns_it(
        exp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: counted done by the launcher (exit 0, never rerun) and failed by the table."""
    bad_eval, run = evals(exp)[0], chosen(exp)
    n = read_json(bad_eval / "result.json")["n_images"]
    tamper(bad_eval, n_correct=n + 1)
    tamper(run, **{"final.val/acc": "high"})
    now = states(exp)
    assert now["eval"][bad_eval.name] == "failed" and now["train"][run.name] == "failed"
    row = rt.collect(exp).set_index("hash").loc[bad_eval.name]
    assert row["state"] == "failed" and row["error"] == run_state(bad_eval, kind="eval").error  # one rule, one reason
    assert f"need 0 <= n_correct ({n + 1}) <= n_images ({n})" in row["error"]
    assert relaunch(exp.parent, "--status") == 0
    assert "failed" in capsys.readouterr().out

    assert relaunch(exp.parent) == 0  # both rerun
    assert read_json(bad_eval / "result.json")["n_correct"] <= n
    assert isinstance(read_json(run / "result.json")["final"]["val/acc"], float)
    assert all_done(exp)


def test_a_rerun_that_writes_an_invalid_result_again_exits_1(exp: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    bad_eval = evals(exp)[0]
    tamper(bad_eval, accuracy="0.9x")
    real = Evaluator.__call__

    def overcount(self: Evaluator, condition: Any, **kwargs: Any) -> dict[str, Any]:
        result = real(self, condition, **kwargs)
        return {**result, "n_correct": result["n_images"] + 1}

    monkeypatch.setattr(Evaluator, "__call__", overcount)
    assert relaunch(exp.parent) == 1
    out = capsys.readouterr().out
    assert "[eval] 4 jobs: 3 done, 1 to submit" in out and "invalid result.json" in out, out
    assert rt.collect(exp).set_index("hash").loc[bad_eval.name, "state"] == "failed"


@pytest.mark.parametrize("kind, changes, why", [
    ("eval", {"n_correct": True}, "must be integers"),
    ("eval", {"accuracy": -1.0}, "is not n_correct/n_images"),
    ("eval", {"per_image": {"file": "../correct.npy", "n": 32}}, "must name a file in the run folder"),
    ("eval", {"hash": "0123456789ab"}, "is the result of run '0123456789ab'"),
    ("train", {"final": {"train/loss": 0.3}}, "must be a mapping holding val/acc"),
    ("train", {"final.val/loss": None}, "must be numbers"),
])
def test_each_kind_of_result_is_validated_once_for_everyone(exp: Path, kind: str, changes: dict[str, Any],
                                                           why: str) -> None:
    run = evals(exp)[0] if kind == "eval" else chosen(exp)
    tamper(run, **changes)
    state = run_state(run, kind=kind)
    assert state.state == "failed" and why in state.error and state.error.startswith("invalid result.json")
