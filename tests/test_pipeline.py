"""The sweep pipeline end to end (datasets -> train -> select -> eval -> collect) on the smoke sweep:
what a launch leaves on disk, what a relaunch submits, failures as rows, selection, chunking, grid."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers import Launch, Submitted

from cluster.jobs import ChunkJob, RunJob
from core.identity import to_jsonable
from core.runs import read_error, write_config
from ecc.evaluate import Condition, Evaluator
from ecc.stimuli import InvalidPlacement, StimulusConfig, check_placement
from results import drawing, table
from sweeps import control, demo, launch, smoke, tasks
from sweeps.pipeline import Pipeline
from sweeps.spec import EvalGrid, SweepSpec

SMOKE = smoke.sweep()
NONE, AREA = (name for name, _ in SMOKE.models)  # "4-1-1-1_contrast_None", "..._areafactor"
STAGES = ("datasets", "train", "eval")


# ------------------------------------------------------------------ helpers


def run(spec: SweepSpec, exp: Path, **kwargs: Any) -> Launch:
    lines: list[str] = []
    rc = Pipeline(spec, exp, echo=lines.append, progress=False, **kwargs).run()
    return Launch(rc, lines)


def submissions(exp: Path) -> dict[str, tuple[str, float]]:
    """Every run folder's last submission: {folder: (job id, time)}."""
    out = {}
    for path in exp.glob("**/submission.json"):
        sub = json.loads(path.read_text())
        out[str(path.parent.relative_to(exp))] = (sub["job_id"], sub["time"])
    return out


def plan_evals(exp: Path) -> list[dict[str, Any]]:
    return json.loads((exp / "plan.json").read_text())["eval"]


def key(row: Any) -> tuple[str, int, float, float | None]:
    fe = row["flanker_ecc"]
    return (row["model"], int(row["flanker_type"]), float(row["target_ecc"]),
            None if fe is None or (isinstance(fe, float) and math.isnan(fe)) else float(fe))


def expected_rows(spec: SweepSpec, models: list[str]) -> set[tuple[str, int, float, float | None]]:
    return {(m, c.flanker_type, c.target_ecc, c.flanker_ecc) for m in models for c in spec.conditions(m)[0]}


def eval_dir(exp: Path, model: str, flanker_type: int, target_ecc: float) -> Path:
    """The run folder of one planned evaluation (the first that matches)."""
    for e in plan_evals(exp):
        c = e["condition"]
        if e["model"] == model and c["flanker_type"] == flanker_type and c["target_ecc"] == target_ecc:
            return exp / e["dir"]
    raise AssertionError(f"no planned evaluation {model} type {flanker_type} te {target_ecc}")


# ------------------------------------------------------------------ a finished experiment, shared
@pytest.fixture
def finished(smoke_experiment: tuple[Path, Launch]) -> tuple[Path, Launch]:
    """The smoke sweep launched once per session (conftest.py), figures included: read it only."""
    return smoke_experiment


@pytest.fixture
def experiment(smoke_copy: Path) -> Path:
    """A private copy of the finished experiment (at <tmp>/smoke, where `--out <tmp>` puts it)."""
    return smoke_copy


# ------------------------------------------------------------------ the whole pipeline


def stage_counts(pipe: Pipeline) -> dict[str, str]:
    """What --status prints per stage (sweeps.control.status_lines): stage -> "N jobs: counts"."""
    out = {}
    for line in control.status_lines(pipe):
        if not line.startswith(" ") and " jobs: " in line:
            stage, rest = line.split(None, 1)
            out[stage] = " ".join(rest.split())
    return out


def check_complete(exp: Path, spec: SweepSpec = SMOKE) -> pd.DataFrame:
    """Every stage done, every file written, one done row per valid condition per selected model."""
    pipe = Pipeline(spec, exp, executor="debug", echo=lambda _: None, progress=False)
    counts = stage_counts(pipe)
    assert list(counts) == list(STAGES)
    for stage, text in counts.items():
        total = int(text.split()[0])
        assert total > 0 and text == f"{total} jobs: {total} done", (stage, text)
    for name in ("spec.json", "plan.json", "selection.json", "results.parquet", "results.csv", "selection.csv"):
        assert (exp / name).is_file(), name
    selection = json.loads((exp / "selection.json").read_text())
    chosen = {m["model"]: m["chosen"] for m in selection["models"]}
    assert set(chosen) == {n for n, _ in spec.models} and all(chosen.values())

    df = table.load(exp)
    assert len(df) == sum(len(spec.conditions(n)[0]) for n, _ in spec.models)
    assert set(df["state"]) == {"done"}
    assert sorted(map(key, df.to_dict("records"))) == sorted(expected_rows(spec, list(chosen)))
    assert not df.duplicated(["model", "flanker_type", "target_ecc", "flanker_ecc"]).any()
    assert not df["hash"].duplicated().any()
    assert set(df["n_images"]) == {spec.grid.test_images}
    assert (df["accuracy"] == df["n_correct"] / df["n_images"]).all()
    assert {m: set(g) for m, g in df.groupby("model")["model_hash"]} == {m: {h} for m, h in chosen.items()}
    csv = pd.read_csv(exp / "results.csv")
    assert len(csv) == len(df) and list(csv.columns) == list(df.columns)
    assert len(pd.read_csv(exp / "selection.csv")) == len(spec.models) * len(spec.learning_rates)
    return df


def test_the_whole_pipeline_in_process(finished: tuple[Path, Launch]) -> None:
    exp, launch_ = finished
    assert launch_.rc == 0, "\n".join(launch_.lines)
    check_complete(exp)
    # one array per stage: 2 datasets, 2 models x 2 learning rates, 2 x 12 conditions in jobs of 4
    assert launch_.grep("submitting") == [
        "[datasets] submitting 2 job(s) for 2 run(s) as one array (debug)",
        "[train] submitting 4 job(s) for 4 run(s) as one array (debug)",
        "[eval] submitting 6 job(s) for 24 run(s) as one array (debug)"]
    assert launch_.grep("[collect] results table: 24/24 conditions done")
    figures = exp / "figures"
    for name, _ in SMOKE.models:
        pngs = {p.stem for p in (figures / drawing.slug(name)).glob("*.png")}
        assert {"spacing_40", "spacing_80", "target_0", "target_80", "heatmap", "training"} <= pngs, pngs
        assert all((figures / drawing.slug(name) / f"{stem}.pdf").is_file() for stem in pngs)
    assert (figures / "stimuli.png").is_file()


@pytest.mark.slow
def test_the_whole_pipeline_with_the_local_executor(tmp_path: Path, submitted: Submitted) -> None:
    exp = tmp_path / "smoke"
    launch_ = run(SMOKE, exp, executor="local")
    assert launch_.rc == 0, "\n".join(launch_.lines)
    check_complete(exp)
    assert [(s, kind, len(calls)) for s, kind, calls in submitted.arrays] == [
        ("datasets", "LocalBackend", 2), ("train", "LocalBackend", 4), ("eval", "LocalBackend", 6)]
    subs = [json.loads(p.read_text()) for p in exp.glob("**/submission.json")]
    assert len(subs) == 2 + 4 + 24 and {s["executor"] for s in subs} == {"local"}
    # real processes: job ids are the pids of the jobs' controllers, none of them this process
    assert all(s["job_id"].isdigit() for s in subs)
    assert len({s["job_id"] for s in subs if s["stage"] == "eval"}) == 6


# ------------------------------------------------------------------ relaunching


def test_a_relaunch_after_completion_submits_nothing(experiment: Path, submitted: Submitted,
                                                     no_figures: list[Path]) -> None:
    before = submissions(experiment)
    launch_ = run(SMOKE, experiment, executor="debug")
    assert launch_.rc == 0
    assert submitted.arrays == []
    assert submissions(experiment) == before  # no job id, no submission time changed
    assert launch_.grep("to submit") == ["[datasets] 2 jobs: 2 done, 0 to submit",
                                         "[train] 4 jobs: 4 done, 0 to submit",
                                         "[eval] 24 jobs: 24 done, 0 to submit"]
    assert not launch_.grep("submitting") and not launch_.grep("finished")
    assert no_figures == [experiment]  # the table and figures are still collected
    check_complete(experiment)


def test_a_lost_eval_result_is_resubmitted_alone(experiment: Path, submitted: Submitted,
                                                 no_figures: list[Path]) -> None:
    lost = eval_dir(experiment, AREA, 1, 40.0)
    (lost / "result.json").unlink()
    before = submissions(experiment)
    launch_ = run(SMOKE, experiment, executor="debug")
    assert launch_.rc == 0, "\n".join(launch_.lines)
    assert submitted.run_dirs("datasets") == [] and submitted.run_dirs("train") == []
    assert submitted.run_dirs("eval") == [[lost.name]]  # one job, that condition alone
    (call,) = submitted.stage("eval")[0]
    ((condition, run_dir),) = call.args[1]  # what the job evaluates: (Condition, run folder) pairs
    assert run_dir == str(lost)
    assert to_jsonable(condition) == json.loads((lost / "config.json").read_text())["config"]["condition"]
    assert launch_.grep("[eval] 24 jobs") == ["[eval] 24 jobs: 23 done, 1 to submit", "[eval] 24 jobs: 24 done"]
    after = submissions(experiment)
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {str(lost.relative_to(experiment))}
    df = check_complete(experiment)  # complete again, no duplicate rows
    assert (df["run_dir"] == str(lost.relative_to(experiment))).sum() == 1


def test_a_relaunch_stopped_before_select_keeps_the_planned_evaluations(
        experiment: Path, no_figures: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    (experiment / SMOKE.train_runs()[1].dir / "result.json").unlink()  # a relaunch that retrains one run ...

    def interrupted(*args: Any) -> Any:
        raise KeyboardInterrupt  # ... and is stopped there (Ctrl-C, the launcher's node going down)

    monkeypatch.setattr(tasks, "train_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(SMOKE, experiment, executor="debug")
    assert len(plan_evals(experiment)) == 24
    df = table.collect(experiment)  # what --report draws from
    assert len(df) == 24 and set(df["state"]) == {"done"}
    assert stage_counts(Pipeline(SMOKE, experiment, executor="debug")) == {
        "datasets": "2 jobs: 2 done", "train": "4 jobs: 3 done, 1 missing", "eval": "24 jobs: 24 done"}


# ------------------------------------------------------------------ failures


def fail_at(target_ecc: float, flanker_type: int) -> Callable[..., Any]:
    real = Evaluator.__call__

    def evaluate(self: Evaluator, condition: Condition, **kwargs: Any) -> Any:
        if condition.target_ecc == target_ecc and condition.flanker_type == flanker_type:
            raise ValueError(f"cannot evaluate\ninjected failure at te={target_ecc:g}")
        return real(self, condition, **kwargs)

    return evaluate


def test_a_failing_condition_is_a_failed_row_and_a_retry_fixes_it(
        experiment: Path, submitted: Submitted, no_figures: list[Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(experiment / "eval")  # evaluate everything again, one condition of each model failing
    argv = ["smoke", "--executor", "debug", "--out", str(experiment.parent)]
    with monkeypatch.context() as m:
        m.setattr(Evaluator, "__call__", fail_at(80.0, 0))
        assert launch.main(argv) == 1
    out = capsys.readouterr().out
    bad = [eval_dir(experiment, model, 0, 80.0) for model in (NONE, AREA)]
    for run_dir in bad:
        error = read_error(run_dir)
        assert error["type"] == "ValueError" and "injected failure at te=80" in error["traceback"]
        assert not (run_dir / "result.json").exists()
    assert "[eval] 24 jobs: 22 done, 2 failed" in out
    assert out.count("failed: ") == 2 and "ValueError: injected failure at te=80" in out
    df = table.load(experiment)
    assert len(df) == 24 and not df.duplicated(["model", "hash"]).any()
    failed = df[df["state"] == "failed"]
    assert sorted(map(key, failed.to_dict("records"))) == sorted([(AREA, 0, 80.0, None), (NONE, 0, 80.0, None)])
    assert set(failed["error"]) == {"ValueError: injected failure at te=80"}  # the error's last line
    assert failed["accuracy"].isna().all() and (df["state"] == "done").sum() == 22
    # the other conditions of the failing chunks (jobs of 4) still completed
    chunks = [c for c in submitted.run_dirs("eval") if {d.name for d in bad} & set(c)]
    assert len(chunks) == 2 and all(len(c) == 4 for c in chunks)
    for name in {n for c in chunks for n in c} - {d.name for d in bad}:
        assert (experiment / "eval" / name / "result.json").is_file()

    submitted.arrays.clear()
    assert launch.main([*argv, "--retry-failed=false"]) == 1  # failures kept
    out = capsys.readouterr().out
    assert submitted.arrays == [] and "22 done, 2 to submit" not in out
    assert "[eval] 24 jobs: 22 done, 0 to submit, 2 failed kept (--retry-failed to rerun them)" in out

    assert launch.main(argv) == 0  # the retry, without the injected failure, fixes them
    out = capsys.readouterr().out
    assert sorted(map(sorted, submitted.run_dirs("eval"))) == sorted([d.name] for d in bad)
    assert "[eval] 24 jobs: 22 done, 2 to submit" in out
    assert all(read_error(d) is None for d in bad)
    check_complete(experiment)


def test_a_model_whose_training_failed_is_reported_and_not_evaluated(
        experiment: Path, submitted: Submitted, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tasks.train_run

    def train_run(cfg: Any, *args: Any) -> Any:
        if cfg.contrast_norm == "areafactor":
            raise RuntimeError("injected training failure")
        return real(cfg, *args)

    monkeypatch.setattr(tasks, "train_run", train_run)
    area_runs = [r for r in SMOKE.train_runs() if r.model == AREA]
    for r in area_runs:
        (experiment / r.dir / "result.json").unlink()
    launch_ = run(SMOKE, experiment, executor="debug")
    assert launch_.rc == 1
    assert sorted(map(sorted, submitted.run_dirs("train"))) == sorted([r.hash] for r in area_runs)
    assert submitted.run_dirs("eval") == []  # the other model's evaluations are done; none for this one
    assert launch_.grep(f"[select] {AREA}") == [f"[select] {AREA}: no finished training run; it is not evaluated"]

    selection = {m["model"]: m for m in json.loads((experiment / "selection.json").read_text())["models"]}
    assert selection[AREA]["chosen"] is None and selection[AREA]["learning_rate"] is None
    assert [(c["state"], c["error"]) for c in selection[AREA]["candidates"]] == \
        [("failed", "RuntimeError: injected training failure")] * 2
    assert selection[NONE]["chosen"]
    assert {e["model"] for e in plan_evals(experiment)} == {NONE}

    df = table.load(experiment)
    assert (df[df["model"] == NONE]["state"] == "done").sum() == 12
    (row,) = df[df["model"] == AREA].to_dict("records")
    assert row["state"] == "no_model" and "injected training failure" in row["error"]
    status = stage_counts(Pipeline(SMOKE, experiment, executor="debug"))
    assert status["train"] == "4 jobs: 2 done, 2 failed" and status["eval"] == "12 jobs: 12 done"
    assert (experiment / "figures" / drawing.slug(NONE) / "spacing_40.png").is_file()


# ------------------------------------------------------------------ selection


def write_train_result(exp: Path, run_dir: str, **final: Any) -> None:
    folder = exp / run_dir
    folder.mkdir(parents=True, exist_ok=True)
    metrics = {"train/loss": 1.0, "train/acc": 0.5, **{k.replace("_", "/"): v for k, v in final.items()}}
    write_config(folder, "train", folder.name, {})  # a result counts only beside its run's config.json
    (folder / "result.json").write_text(json.dumps({"kind": "train", "hash": folder.name, "final": metrics,
                                                    "best_epoch": 2}))


def test_selection_takes_the_best_val_acc_ties_by_val_loss(tmp_path: Path) -> None:
    spec = replace(SMOKE, learning_rates=(0.1, 0.01, 0.001))
    runs = {(r.model, r.config.learning_rate): r.dir for r in spec.train_runs()}
    # NONE: 0.1 and 0.01 tie on val/acc, 0.01 has the lower val/loss; 0.001 diverged (loss NaN, stored
    # as "nan") at a lower accuracy.
    write_train_result(tmp_path, runs[NONE, 0.1], val_acc=0.5, val_loss=1.2)
    write_train_result(tmp_path, runs[NONE, 0.01], val_acc=0.5, val_loss=0.9)
    write_train_result(tmp_path, runs[NONE, 0.001], val_acc=0.2, val_loss="nan")
    # AREA: the highest val/acc wins despite a higher val/loss, even with a NaN loss; a failed run is skipped
    write_train_result(tmp_path, runs[AREA, 0.1], val_acc=0.7, val_loss="nan")
    write_train_result(tmp_path, runs[AREA, 0.01], val_acc=0.6, val_loss=0.1)
    (tmp_path / runs[AREA, 0.001]).mkdir(parents=True)
    (tmp_path / runs[AREA, 0.001] / "error.json").write_text(json.dumps({"type": "OSError", "message": "disk"}))
    lines: list[str] = []
    selected = Pipeline(spec, tmp_path, executor="debug", echo=lines.append).select()
    hashes = {k: Path(v).name for k, v in runs.items()}
    assert selected == [(NONE, hashes[NONE, 0.01], 0.01), (AREA, hashes[AREA, 0.1], 0.1)]
    selection = json.loads((tmp_path / "selection.json").read_text())
    assert selection["rule"] == "highest val/acc, ties broken by lowest val/loss"
    assert [(m["model"], m["chosen"], m["learning_rate"]) for m in selection["models"]] == \
        [(NONE, hashes[NONE, 0.01], 0.01), (AREA, hashes[AREA, 0.1], 0.1)]
    assert [c["state"] for c in selection["models"][1]["candidates"]] == ["done", "done", "failed"]
    assert selection["models"][1]["candidates"][2]["error"] == "OSError: disk"
    assert len(lines) == 2 and "lr=0.001: failed" in lines[1] and "val/loss nan" in lines[1]
    assert Pipeline(spec, tmp_path, executor="debug").evaluation(selected).units()  # the chosen ones get evaluated


def test_selection_with_no_finished_run_chooses_none(tmp_path: Path) -> None:
    lines: list[str] = []
    runs = {(r.model, r.config.learning_rate): r.dir for r in SMOKE.train_runs()}
    write_train_result(tmp_path, runs[NONE, 0.1], val_acc=0.5, val_loss=1.0)
    write_train_result(tmp_path, runs[AREA, 0.1], val_acc="nan", val_loss="nan")  # no accuracy: not a candidate
    selected = Pipeline(SMOKE, tmp_path, executor="debug", echo=lines.append).select()
    assert [s[0] for s in selected] == [NONE]
    models = json.loads((tmp_path / "selection.json").read_text())["models"]
    assert models[1]["chosen"] is None and [c["state"] for c in models[1]["candidates"]] == ["done", "missing"]
    assert lines[1] == f"[select] {AREA}: no finished training run; it is not evaluated"


# ------------------------------------------------------------------ conditions per job


def one_model_spec(per_job: int) -> SweepSpec:
    grid = replace(SMOKE.grid, target_eccs=(-80, -40, 0, 20), flanker_eccs=(-80, -40, 60, 80))
    return replace(SMOKE, models=SMOKE.models[:1], grid=grid, conditions_per_job=per_job)


def test_conditions_per_job_chunks_one_array(experiment: Path, submitted: Submitted, no_figures: list[Path]) -> None:
    spec = one_model_spec(5)  # the smoke sweep's first model (trained already) on a 24-condition grid
    assert len(spec.conditions(NONE)[0]) == 24
    shutil.rmtree(experiment / "eval")  # (some of these conditions are on the smoke grid too: done already)
    launch_ = run(spec, experiment, executor="debug")
    assert launch_.rc == 0, "\n".join(launch_.lines)
    (calls,) = submitted.stage("eval")  # one array ...
    assert [len(c.run_dirs) for c in calls] == [5, 5, 5, 5, 4]  # ... of 5 jobs
    assert len({d for c in calls for d in c.run_dirs}) == 24
    assert all(len(c.args[1]) == len(c.run_dirs) for c in calls)  # each job evaluates its own conditions
    assert "[eval] submitting 5 job(s) for 24 run(s) as one array (debug)" in launch_.lines
    assert "-> 5 jobs" in Pipeline(spec, experiment, executor="debug").plan_lines()[-4]
    check_complete(experiment, spec)


@pytest.mark.parametrize(("per_job", "sizes"), [(1, [1] * 12), (4, [4, 4, 4]), (5, [5, 5, 2]), (12, [12]),
                                                (50, [12])])
def test_conditions_are_chunked_per_model(per_job: int, sizes: list[int], tmp_path: Path) -> None:
    spec = replace(SMOKE, conditions_per_job=per_job)
    pipe = Pipeline(spec, tmp_path, executor="debug")
    evaluation = pipe.evaluation([(NONE, "a" * 12, 0.1), (AREA, "b" * 12, 0.1)])
    units = evaluation.units()
    calls = evaluation.jobs(units)
    assert [len(chunk) for _, chunk in calls] == sizes * 2  # a job loads one model
    for job, chunk in calls:
        assert isinstance(job, ChunkJob) and len({u.payload.model for u in chunk}) == 1
        assert [Path(d) for d in job.run_dirs] == [u.run_dir for u in chunk]
    expected = f"-> {2 * len(sizes)} jobs"
    assert expected in next(line for line in pipe.plan_lines() if "conditions in total" in line)
    for stage in (pipe.datasets, pipe.train):  # one run per job there
        units = stage.units()
        assert all(isinstance(c, RunJob) and chunk == [u] for (c, chunk), u in zip(stage.jobs(units), units,
                                                                                    strict=True))


# ------------------------------------------------------------------ grid expansion


def independent_expand(grid: EvalGrid, stimulus: StimulusConfig) -> tuple[set[tuple], int, int]:
    """The grid's distinct renderable images, from check_placement alone: type 0 ignores the
    flanker eccentricity, type 2 is the same image as its mirror about the target."""
    seen: set[tuple] = set()
    invalid = duplicate = 0
    for ft, te, fe, fd in itertools.product(grid.flanker_types, grid.target_eccs, grid.flanker_eccs,
                                            grid.flanker_dsets):
        try:
            check_placement(stimulus, float(te), ft, None if ft == 0 else float(fe))
        except InvalidPlacement:
            invalid += 1
            continue
        flankers = frozenset() if ft == 0 else frozenset({float(fe)} if ft == 1 else {float(fe), 2.0 * te - fe})
        image = (ft, float(te), flankers, fd)
        if image in seen:
            duplicate += 1
        seen.add(image)
    return seen, invalid, duplicate


def as_image(c: Condition) -> tuple:
    ft, te, fe = c.flanker_type, c.target_ecc, c.flanker_ecc
    flankers = frozenset() if ft == 0 else frozenset({fe} if ft == 1 else {fe, 2.0 * te - fe})
    return (ft, te, flankers, c.flanker_dset)


def test_the_demo_grid_drops_invalid_and_duplicate_points() -> None:
    spec = demo.sweep()
    grid = spec.grid
    assert len(grid.flanker_types) * len(grid.target_eccs) * len(grid.flanker_eccs) == 336
    for name, cfg in spec.models:
        conditions, dropped = spec.conditions(name)
        assert (len(conditions), dropped) == (154, {"invalid": 63, "duplicate": 119})
        images, invalid, duplicate = independent_expand(grid, cfg.stimulus)
        assert (len(images), invalid, duplicate) == (154, 63, 119)
        assert {as_image(c) for c in conditions} == images
        assert len(set(conditions)) == len(conditions)
        for c in conditions:
            check_placement(cfg.stimulus, c.target_ecc, c.flanker_type, c.flanker_ecc)
            assert c == c.canonical()
        labels = pd.Series([c.label for c in conditions]).value_counts().to_dict()
        assert labels == {"a": 14, "xa": 42, "ax": 49, "xax": 49}
    # where the drops come from: type 0 keeps one point per target (14 of 112: 98 duplicates); types 1 and 2
    # lose the 21 overlapping points each (|flanker - target| < 120), type 2 also 21 whose mirror flanker
    # leaves the field, and 21 mirror duplicates: 98 + 21 = 119 duplicates, 21 + 21 + 21 = 63 invalid.
    by_type = {t: independent_expand(replace(grid, flanker_types=(t,)), spec.models[0][1].stimulus)[1:]
               for t in (0, 1, 2)}
    assert by_type == {0: (0, 98), 1: (21, 0), 2: (42, 21)}


def test_grid_expansion_by_hand() -> None:
    stim = smoke.TINY  # 240 px field, 40 px digits: centres within +-100, >= 40 apart
    grid = EvalGrid(target_eccs=(0, 60), flanker_eccs=(0, 40, 120), flanker_types=(0, 1, 2))
    conditions, dropped = grid.expand(stim)
    assert conditions == [Condition(0.0, None, 0), Condition(60.0, None, 0),  # flanker ecc ignored
                          Condition(0.0, 40.0, 1), Condition(60.0, 0.0, 1),
                          Condition(0.0, 40.0, 2)]  # canonical: the mirror -40 is the same image
    # 18 points: type 0 -> 2 kept, 4 duplicates; type 1 -> 2 kept, 4 invalid (overlapping or out of the
    # field); type 2 -> 1 kept, 5 invalid ((60, 0) has its mirror flanker at 120, out of the field)
    assert dropped == {"invalid": 9, "duplicate": 4}
    images, invalid, duplicate = independent_expand(grid, stim)
    assert ({as_image(c) for c in conditions}, invalid, duplicate) == (images, 9, 4)

    mirrors = EvalGrid(target_eccs=(0,), flanker_eccs=(-60, 60), flanker_types=(2,))
    conditions, dropped = mirrors.expand(stim)
    assert conditions == [Condition(0.0, 60.0, 2)] and dropped == {"invalid": 0, "duplicate": 1}
    assert len(SMOKE.conditions(NONE)[0]) == 12 and SMOKE.conditions(NONE)[1] == {"invalid": 8, "duplicate": 7}
