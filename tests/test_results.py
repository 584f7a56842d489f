"""The results table, its figures and the summary notebook, on synthetic experiment folders."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_experiment import (
    FakeExperiment,
    FakeGrid,
    FakeModel,
    corrupt_result,
    fail_run,
    remove_run,
    set_result,
    write_fake_experiment,
)
from helpers import run_notebook

from core.atomic import CorruptFileError, atomic_write_json
from core.layout import PLAN, SELECTION
from core.plan import Plan, Selection
from core.runs import JobState
from ecc.conditions import LABELS, condition_label
from ecc.model import ModelConfig, num_classes
from ecc.sources import PARITIES, SourceConfig
from ecc.stimuli import StimulusConfig
from results import drawing, gallery, plots, stats, training
from results import table as rt
from results.figspec import FigureSpec

GRID = FakeGrid(target_eccs=(0.0, 120.0, 240.0, 360.0), flanker_eccs=(0.0, 120.0, 240.0, 360.0, 480.0))
A = FakeModel("areafactor", robustness=0.6)
B = FakeModel("None", robustness=0.3)
C = FakeModel("None", pm="11-3-1-1-1", train_fails=True)  # no learning rate finishes: nothing chosen
SPEC = FigureSpec(spacings=(120.0, 240.0), center_target=0.0, far_target=360.0)
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "summary.ipynb"


def make(root: Path, name: str = "tiny") -> FakeExperiment:
    return write_fake_experiment(root, name=name, grid=GRID, models=(A, B, C), learning_rates=(0.1, 0.01),
                                 n_images=200, epochs=3)


class Broken:
    """A small experiment with one of each kind of trouble (see `broken`)."""

    def __init__(self, root: Path) -> None:
        self.fake = fake = make(root)
        self.exp = fake.path
        e = fake.find_eval
        self.a0 = e(A.name, 0, 0.0).hash                   # 81 / 263 (Newcombe 1998's example)
        self.xa240 = e(A.name, 1, 240.0, 120.0).hash       # 0 / 20
        self.failed = e(A.name, 1, 120.0, 240.0).hash      # error.json
        self.missing = e(A.name, 2, 240.0, 360.0).hash     # folder gone
        self.corrupt = e(A.name, 2, 120.0, 240.0).hash     # truncated result.json
        self.running = e(A.name, 1, 0.0, 240.0).hash       # submitted, scheduler says RUNNING
        set_result(fake.eval_dir(self.a0), 81, 263)
        set_result(fake.eval_dir(self.xa240), 0, 20)
        fail_run(fake.eval_dir(self.failed))
        remove_run(fake.eval_dir(self.missing))
        corrupt_result(fake.eval_dir(self.corrupt))
        (fake.eval_dir(self.running) / "result.json").unlink()
        sub = json.loads((fake.eval_dir(self.running) / "submission.json").read_text())
        self.scheduler = {sub["job_id"]: JobState("running")}
        # Model A's xax at spacing 240 is not planned at all; the plan lists a0 twice.
        evals = [p for p in fake.plan.eval if not (
            p.model == A.name and p.condition["flanker_type"] == 2
            and abs(p.condition["flanker_ecc"] - p.condition["target_ecc"]) == 240)]
        evals.append(next(p for p in evals if p.hash == self.a0))
        self.plan = dataclasses.replace(fake.plan, eval=tuple(evals))
        self.plan.write(self.exp / PLAN)
        self.table = rt.collect(self.exp, self.scheduler)

    def row(self, hash_: str) -> pd.Series:
        rows = self.table[self.table["hash"] == hash_]
        assert len(rows) == 1, rows
        return rows.iloc[0]


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Broken:
    return Broken(tmp_path_factory.mktemp("broken"))


# ----------------------------------------------------------------------------- table
@pytest.mark.parametrize(("k", "n", "lo", "hi"), [
    # Newcombe (1998), Stat. Med. 17:857, table I, method 3 (score interval without continuity correction)
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718),
    (5, 10, 0.2366, 0.7634), (50, 100, 0.4038, 0.5962)])
def test_wilson_interval_known_values(k: int, n: int, lo: float, hi: float) -> None:
    got_lo, got_hi = stats.wilson_interval(k, n)
    assert got_lo[0] == pytest.approx(lo, abs=5e-5) and got_hi[0] == pytest.approx(hi, abs=5e-5)


def test_wilson_interval_edges() -> None:
    z2 = stats.Z95**2
    lo, hi = stats.wilson_interval([0, 10, 3], [10, 10, 0])
    assert lo[0] == 0 and hi[0] == pytest.approx(z2 / (10 + z2), abs=1e-12)  # closed form at k = 0
    assert hi[1] == 1 and lo[1] == pytest.approx(10 / (10 + z2), abs=1e-12)   # and at k = n
    assert math.isnan(lo[2]) and math.isnan(hi[2])                             # no images: no interval


@pytest.mark.parametrize("parity", PARITIES)
def test_num_classes_matches_the_model(parity: str) -> None:
    assert num_classes(parity) == ModelConfig(parity=parity).num_classes


def test_condition_labels() -> None:
    assert condition_label(0, 240, None) == "a"
    assert condition_label(1, 240, 120) == "xa"
    assert condition_label(1, 240, 360) == "ax"
    assert condition_label(1, 0, 120) == "ax"
    assert condition_label(1, -240, -120) == "xa"
    assert condition_label(2, 240, 360) == "xax"


def test_the_plan_reads_back_as_written(tmp_path: Path) -> None:
    fake = make(tmp_path)
    assert Plan.read(fake.path / PLAN) == fake.plan
    assert Plan.read(tmp_path / "nothing" / PLAN) is None
    assert set(json.loads((fake.path / PLAN).read_text())["eval"][0]) == {
        "hash", "dir", "model", "model_hash", "learning_rate", "seed", "condition", "test_images"}


@pytest.mark.parametrize(("edit", "message"), [
    (lambda p: p["eval"][1].pop("seed"), "eval[1].seed is missing"),
    (lambda p: p["train"][0].update(learning_rate="0.1"), "train[0].learning_rate must be a number, not '0.1'"),
    (lambda p: p["eval"][0].update(test_images=True), "eval[0].test_images must be an integer, not True"),
    (lambda p: p.update(train={}), "train must be a list"),
    (lambda p: p.pop("experiment"), "experiment is missing"),
    (lambda p: p["eval"][0].update(seeds=[0]), "eval[0] has unknown fields ['seeds']; valid: ['hash', 'dir'"),
])
def test_a_damaged_plan_names_the_file_and_the_field(tmp_path: Path, edit, message: str) -> None:
    fake = make(tmp_path)
    plan = json.loads((fake.path / PLAN).read_text())
    edit(plan)
    (fake.path / PLAN).write_text(json.dumps(plan))
    with pytest.raises(CorruptFileError, match=re.escape(f"{fake.path / PLAN}: {message}")):
        rt.collect(fake.path)


def test_a_selection_written_before_its_optional_fields_reads_with_their_defaults(tmp_path: Path) -> None:
    """The fake selection.json has no seeds, scope, scores nor learning_rates (as early launchers wrote)."""
    fake = make(tmp_path)
    sel = Selection.read(fake.path / SELECTION)
    a, b, c = (m.name for m in (A, B, C))
    assert sel is not None and sel.seeds == () and sel.scope == "" and [m.model for m in sel.models] == [a, b, c]
    assert sel.unselected().keys() == {c} and all(m.scores == () for m in sel.models)
    assert {m for m, _ in sel.chosen_runs()} == {a, b}
    assert Selection.from_json(fake.path / SELECTION, sel.to_json()) == sel  # what it writes reads back the same
    assert Selection.read(tmp_path / "nothing" / SELECTION) is None


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.pop("models"), "models is missing"),
    (lambda s: s["models"][0].update(chosen=3), "models[0].chosen must be a string or null, not 3"),
    (lambda s: s["models"][1]["candidates"][0].pop("hash"), "models[1].candidates[0].hash is missing"),
    (lambda s: s["models"][0]["candidates"][1].update(learning_rate="0.1"),
     "models[0].candidates[1].learning_rate must be a number, not '0.1'"),
    (lambda s: s["models"][0]["candidates"][0].update({"val/acc": [1]}),
     "models[0].candidates[0].val/acc must be a number, a string or null, not [1]"),
    (lambda s: s["models"][0]["chosen_runs"][0].update(seeds=[0]), "models[0].chosen_runs[0] has unknown fields ['seeds']"),
    (lambda s: s.update(seeds=[0, "1"]), "seeds[1] must be an integer, not '1'"),
    (lambda s: s["models"].append([]), "models[3] must be an object, not []"),
])
def test_a_damaged_selection_names_the_file_and_the_field(tmp_path: Path, edit, message: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    fake = make(tmp_path)
    selection = json.loads((fake.path / SELECTION).read_text())
    edit(selection)
    (fake.path / SELECTION).write_text(json.dumps(selection))
    with pytest.raises(CorruptFileError, match=re.escape(f"{fake.path / SELECTION}: {message}")):
        Selection.read(fake.path / SELECTION)
    assert not rt.selection_table(fake.path)["chosen"].any()  # the tables go on without it, and say why
    assert message in caplog.text


def test_one_row_per_planned_job_no_duplicates(broken: Broken) -> None:
    t = broken.table
    planned = {p.hash for p in broken.plan.eval}
    assert len(broken.plan.eval) == len(planned) + 1  # a0 is listed twice
    assert set(t.loc[t["hash"] != "", "hash"]) == planned
    assert not t.loc[t["hash"] != "", "hash"].duplicated().any()
    assert len(t) == len(planned) + 1  # plus model C's no_model row
    assert (t["experiment"] == "tiny").all()
    assert list(t.columns[:4]) == ["experiment", "model", "model_hash", "learning_rate"]
    for col in ("pm", "contrast_norm", "total_pool", "num_scales", "random_shifts", "parity", "num_classes",
                "train_target_ecc", "train_flanker_type", "chevron", "flanker_type", "label", "target_ecc",
                "flanker_ecc", "spacing", "flanker_dset", "n_images", "n_correct", "accuracy", "ci_low",
                "ci_high", "job_id", "state", "error", "hash", "run_dir"):
        assert col in t.columns, col


def test_done_rows_hold_the_results_exactly(broken: Broken) -> None:
    done = broken.table[broken.table["state"] == "done"]
    assert len(done) == len(broken.table) - 5  # failed, missing, corrupt, running, no_model
    for _, r in done.iterrows():
        result = json.loads((broken.exp / r["run_dir"] / "result.json").read_text())
        assert (r["n_images"], r["n_correct"]) == (result["n_images"], result["n_correct"])
        assert r["accuracy"] == result["n_correct"] / result["n_images"]
        lo, hi = stats.wilson_interval(result["n_correct"], result["n_images"])
        assert (r["ci_low"], r["ci_high"]) == (lo[0], hi[0])
        assert r["ci_low"] <= r["accuracy"] <= r["ci_high"]
        assert r["job_id"] != ""
        assert r["learning_rate"] == 0.01 and r["contrast_norm"] in ("areafactor", "None")


def test_hand_computed_rows(broken: Broken) -> None:
    a0 = broken.row(broken.a0)
    assert (a0["label"], a0["flanker_type"], a0["target_ecc"]) == ("a", 0, 0.0)
    assert math.isnan(a0["flanker_ecc"]) and math.isnan(a0["spacing"])
    assert (a0["n_images"], a0["n_correct"], a0["accuracy"]) == (263, 81, 81 / 263)
    assert a0["ci_low"] == pytest.approx(0.2553, abs=5e-5) and a0["ci_high"] == pytest.approx(0.3662, abs=5e-5)
    xa = broken.row(broken.xa240)
    assert (xa["label"], xa["target_ecc"], xa["flanker_ecc"], xa["spacing"]) == ("xa", 240.0, 120.0, 120.0)
    assert (xa["accuracy"], xa["ci_low"]) == (0.0, 0.0) and xa["ci_high"] == pytest.approx(0.1611, abs=5e-5)
    assert xa["pm"] == "11-1-1-1-1" and xa["contrast_norm"] == "areafactor" and xa["num_classes"] == 5


def test_labels_and_spacing_follow_the_conditions(broken: Broken) -> None:
    t = broken.table[broken.table["state"] != rt.NO_MODEL]
    for _, r in t.iterrows():
        if r["flanker_type"] == 0:
            assert r["label"] == "a" and math.isnan(r["spacing"])
            continue
        assert r["spacing"] == abs(r["flanker_ecc"] - r["target_ecc"])
        want = "xax" if r["flanker_type"] == 2 else ("xa" if abs(r["flanker_ecc"]) < abs(r["target_ecc"]) else "ax")
        assert r["label"] == want


def test_failed_missing_corrupt_running_rows(broken: Broken) -> None:
    failed = broken.row(broken.failed)
    assert (failed["state"], failed["error"]) == ("failed", "ValueError: the last line")
    assert failed["job_id"] != ""
    missing, corrupt, running = broken.row(broken.missing), broken.row(broken.corrupt), broken.row(broken.running)
    assert (missing["state"], missing["error"], missing["job_id"]) == ("missing", "", "")
    assert corrupt["state"] in ("missing", "failed", "pending") and "corrupt result.json" in corrupt["error"]
    assert running["state"] == "running" and running["job_id"] in broken.scheduler
    for r in (failed, missing, corrupt, running):
        assert math.isnan(r["accuracy"]) and pd.isna(r["n_images"]) and pd.isna(r["n_correct"])
        assert math.isnan(r["ci_low"]) and math.isnan(r["ci_high"])
        assert r["label"] in LABELS  # the condition is known even without a result


def test_model_without_a_chosen_learning_rate(broken: Broken) -> None:
    rows = broken.table[broken.table["model"] == C.name]
    assert len(rows) == 1
    r = rows.iloc[0]
    assert r["state"] == rt.NO_MODEL and r["pm"] == "11-3-1-1-1"
    assert r["error"].startswith("selection chose no learning rate") and "RuntimeError" in r["error"]
    assert pd.isna(r["flanker_type"]) and math.isnan(r["accuracy"])


def test_without_scheduler_a_submitted_job_is_pending(broken: Broken) -> None:
    t = rt.collect(broken.exp)
    assert t.loc[t["hash"] == broken.running, "state"].item() == "pending"


def test_invalid_result_contents_are_failed_rows(tmp_path: Path) -> None:
    fake = make(tmp_path)
    h = fake.find_eval(B.name, 0, 120.0).hash
    result = json.loads((fake.eval_dir(h) / "result.json").read_text())
    atomic_write_json(fake.eval_dir(h) / "result.json", {**result, "n_correct": result["n_images"] + 1})
    stale = fake.find_eval(B.name, 1, 240.0, 120.0).hash  # a result for another condition, copied over it
    other = fake.find_eval(B.name, 1, 240.0, 360.0).hash
    shutil.copy(fake.eval_dir(other) / "result.json", fake.eval_dir(stale) / "result.json")
    benign = fake.find_eval(B.name, 0, 240.0).hash  # type 0 ignores flanker_ecc: 0.0 or null alike
    result = json.loads((fake.eval_dir(benign) / "result.json").read_text())
    atomic_write_json(fake.eval_dir(benign) / "result.json",
                      {**result, "condition": {**result["condition"], "flanker_ecc": 0.0}})
    t = rt.collect(fake.path).set_index("hash")
    for bad in (h, stale):
        assert t.loc[bad, "state"] == "failed" and t.loc[bad, "error"].startswith("invalid result.json")
        assert math.isnan(t.loc[bad, "accuracy"])
    assert other in t.loc[stale, "error"] and stale in t.loc[stale, "error"]  # whose result it is, where
    assert t.loc[benign, "state"] == "done"


def test_two_plan_entries_for_one_evaluation_give_one_row(tmp_path: Path) -> None:
    fake = make(tmp_path)
    entry = fake.find_eval(B.name, 0, 240.0)
    twin = dataclasses.replace(entry, hash="0123456789ab", dir="eval/0123456789ab")  # never run
    dataclasses.replace(fake.plan, eval=(*fake.plan.eval, twin)).write(fake.path / PLAN)
    t = rt.collect(fake.path)
    rows = t[(t["model"] == B.name) & (t["flanker_type"] == 0) & (t["target_ecc"] == 240.0)]
    assert len(rows) == 1 and rows["hash"].item() == entry.hash and rows["state"].item() == "done"


def test_selection_table(broken: Broken) -> None:
    s = rt.selection_table(broken.exp)
    assert len(s) == 6 and not s["hash"].duplicated().any()
    assert s.attrs["rule"].startswith("highest val/acc")
    chosen = s[s["chosen"]]
    assert sorted(chosen["model"]) == sorted([A.name, B.name]) and (chosen["learning_rate"] == 0.01).all()
    c = s[s["model"] == C.name]
    assert (c["state"] == "failed").all() and not c["chosen"].any() and c["val/acc"].isna().all()
    done = s[s["state"] == "done"]
    for _, r in done.iterrows():
        result = json.loads((broken.exp / r["run_dir"] / "result.json").read_text())
        assert r["val/acc"] == result["final"]["val/acc"] and r["train/loss"] == result["final"]["train/loss"]
        assert r["best_epoch"] == result["best_epoch"]


def test_training_curves_ignore_a_torn_last_line(tmp_path: Path) -> None:
    fake = make(tmp_path)
    h = fake.plan.train[0].hash
    with open(fake.path / "train" / h / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "train/lo')  # a crash mid-write
    curves = training.training_curves(fake.path)
    assert list(curves.loc[curves["hash"] == h, "epoch"]) == [1, 2, 3]
    assert set(curves["model"]) == {A.name, B.name}  # C's runs left no metrics
    assert curves.groupby("hash")["chosen"].first().sum() == 2
    assert {"train/loss", "train/acc", "val/loss", "val/acc"} <= set(curves.columns)


def test_save_and_load(broken: Broken) -> None:
    paths = rt.save(broken.exp, broken.table)
    assert [p.name for p in paths] == ["results.parquet", "results.csv", "selection.csv"]
    pd.testing.assert_frame_equal(rt.load(broken.exp), broken.table)
    assert len(pd.read_csv(broken.exp / "results.csv")) == len(broken.table)
    assert len(rt.load_selection(broken.exp)) == 6
    assert not [p for p in broken.exp.iterdir() if p.name.startswith(".")]  # no temp files left


def test_summarize_counts_states(broken: Broken) -> None:
    s = rt.summarize(broken.table)
    assert s["planned"].sum() == len(broken.table)
    assert s.loc[(A.name, "xax"), "missing"] >= 1 and s.loc[(C.name, "-"), rt.NO_MODEL] == 1


# ----------------------------------------------------------------------------- figures
def lines(ax) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """curve label -> (x, y) of each curve's data line (plots gives it the label as gid)."""
    return {ln.get_gid(): (np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float))
            for ln in ax.get_lines() if ln.get_gid()}


def bars(ax, label: str) -> dict[float, tuple[float, float]]:
    """x -> (low, high) of the error bars of one curve."""
    cont = next(c for c in ax.containers if c.get_label() == label)
    segments = [np.asarray(s, float) for s in cont.lines[2][0].get_segments()]
    return {s[0, 0]: (s[0, 1], s[1, 1]) for s in segments if s.shape == (2, 2) and np.isfinite(s).all()}


def notes(ax) -> str:
    return "\n".join(t.get_text() for t in ax.texts if t.get_gid() == drawing.NOTE_GID)


def expect(rows: pd.DataFrame, x: pd.Series) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    df = rows.assign(_x=x).sort_values("_x")
    return df["_x"].to_numpy(float), df["accuracy"].to_numpy(float), df


def check_curve(ax, label: str, rows: pd.DataFrame, x: pd.Series) -> None:
    ex, ey, df = expect(rows, x)
    gx, gy = lines(ax)[label]
    np.testing.assert_array_equal(gx, ex)
    np.testing.assert_array_equal(gy, ey)  # NaN (a gap) exactly where the table has no result
    got = bars(ax, label)
    for _, r in df[df["state"] == "done"].iterrows():
        assert got[r["_x"]] == pytest.approx((r["ci_low"], r["ci_high"]), abs=1e-12)


def test_spacing_figure_matches_the_table(broken: Broken) -> None:
    t = broken.table[broken.table["model"] == A.name]
    ax = plots.spacing_figure(broken.table, A.name, 120).axes[0]
    one, two = t[t["flanker_type"] == 1], t[t["flanker_type"] == 2]
    a = t[t["flanker_type"] == 0]
    xa = one[one["target_ecc"] - one["flanker_ecc"] == 120]
    ax_ = one[one["flanker_ecc"] - one["target_ecc"] == 120]
    xax = two[two["spacing"] == 120]
    check_curve(ax, "a", a, a["target_ecc"])
    check_curve(ax, "xa", xa, xa["target_ecc"])
    check_curve(ax, "ax", ax_, ax_["target_ecc"])
    check_curve(ax, "xax", xax, xax["target_ecc"])
    assert np.isnan(lines(ax)["ax"][1]).sum() == 1 and np.isnan(lines(ax)["xax"][1]).sum() == 2
    assert set(lines(ax)) == {"a", "xa", "ax", "xax", "chance"}
    assert (lines(ax)["chance"][1] == 0.2).all()
    assert "ax: 1 of" in notes(ax) and "xax: 2 of" in notes(ax)


def test_a_curve_without_data_is_left_out_and_noted(broken: Broken, tmp_path: Path) -> None:
    ax = plots.spacing_figure(broken.table, A.name, 240).axes[0]
    assert "xax" not in lines(ax) and "xax: no data (not in the grid)" in notes(ax)
    assert {"a", "xa", "ax"} <= set(lines(ax))
    # planned but every job failed: also left out (never drawn as zeros), with the states in the note
    fake = make(tmp_path)
    xa = [p for p in fake.plan.eval if p.model == B.name and p.condition["flanker_type"] == 1
          and p.condition["target_ecc"] - p.condition["flanker_ecc"] == 240]
    for p in xa:
        fail_run(fake.eval_dir(p.hash))
    ax = plots.spacing_figure(rt.collect(fake.path), B.name, 240).axes[0]
    assert "xa" not in lines(ax) and f"xa: no data ({len(xa)} planned: {len(xa)} failed)" in notes(ax)


def test_target_fixed_figures_match_the_table(broken: Broken) -> None:
    t = broken.table[broken.table["model"] == A.name]
    ax = plots.center_target_figure(broken.table, A.name, 0.0).axes[0]
    at0 = t[t["target_ecc"] == 0]
    a_x, a_y = lines(ax)["a"]
    assert (a_y == 81 / 263).all() and len(a_y) == 2  # a constant across the figure
    ax_rows = at0[at0["label"] == "ax"]
    check_curve(ax, "ax", ax_rows, ax_rows["flanker_ecc"])
    check_curve(ax, "xax", at0[at0["label"] == "xax"], at0.loc[at0["label"] == "xax", "flanker_ecc"])
    assert a_x[0] == ax_rows["flanker_ecc"].min() and a_x[1] == ax_rows["flanker_ecc"].max()
    assert set(lines(ax)) == {"a", "ax", "xax", "chance"}

    ax = plots.far_target_figure(broken.table, A.name, 360.0).axes[0]
    far = t[(t["target_ecc"] == 360) & (t["label"] == "xa")]
    check_curve(ax, "xa", far, far["target_ecc"] - far["flanker_ecc"])
    a360 = t[(t["target_ecc"] == 360) & (t["flanker_type"] == 0)]["accuracy"].item()
    assert (lines(ax)["a"][1] == a360).all()
    assert set(lines(ax)) == {"a", "xa", "chance"}

    ax = plots.far_target_figure(broken.table, A.name, 720.0).axes[0]  # not in this grid
    assert set(lines(ax)) == {"chance"} and "a: no data" in notes(ax) and "xa: no data" in notes(ax)


def test_paper_figures_has_one_panel_per_cut(broken: Broken) -> None:
    fig = plots.paper_figures(broken.table, B.name, SPEC)
    assert len(fig.axes) == 4
    assert [a.get_xlabel() for a in fig.axes] == ["target eccentricity (px)"] * 2 + [
        "flanker eccentricity (px)", "target - flanker eccentricity (px)"]


def test_heatmap_matches_the_table(broken: Broken) -> None:
    fig = plots.heatmap_figure(broken.table, A.name)
    t = broken.table[broken.table["model"] == A.name]
    panels = {a.get_title(): a for a in fig.axes if a.images}
    assert set(panels) == {"no flanker (a)", "one flanker (xa, ax)", "two flankers (xax)"}
    for title, ftype in (("one flanker (xa, ax)", 1), ("two flankers (xax)", 2)):
        want = t[t["flanker_type"] == ftype].pivot(index="flanker_ecc", columns="target_ecc", values="accuracy")
        want = want.reindex(columns=sorted(t["target_ecc"].dropna().unique()))
        got = np.ma.filled(panels[title].images[0].get_array().astype(float), np.nan)
        np.testing.assert_array_equal(got, want.to_numpy(float))
    got0 = np.ma.filled(panels["no flanker (a)"].images[0].get_array().astype(float), np.nan)
    np.testing.assert_array_equal(got0[0], t[t["flanker_type"] == 0].sort_values("target_ecc")["accuracy"])


def test_training_figure_highlights_the_chosen_rate(broken: Broken) -> None:
    curves, sel = training.training_curves(broken.exp), rt.selection_table(broken.exp)
    fig = training.training_figure(curves, A.name, sel)
    got = {ln.get_label(): ln.get_linewidth() for ln in fig.axes[0].get_lines()}
    assert set(got) == {"lr 0.01 (chosen) train", "lr 0.01 (chosen) val", "lr 0.1 train", "lr 0.1 val"}
    assert got["lr 0.01 (chosen) train"] > got["lr 0.1 train"]
    fig = training.training_figure(curves, C.name, sel)
    assert not fig.axes[0].get_lines() and "RuntimeError" in notes(fig.axes[1])


def test_gallery_shows_every_configuration() -> None:
    cfg = StimulusConfig(field_size=480, digit_height=60, flanker_height=60, crop_size=30, num_scales=5)
    fig = gallery.gallery_figure(gallery.text_glyph("4"), gallery.text_glyph("7"), cfg, target_eccs=(0.0, 120.0),
                               spacing=60.0)
    rows = [a for a in fig.axes if a.get_ylabel()]
    assert [a.get_ylabel() for a in rows] == [f"{lab}\nt={t}" for t in (0, 120) for lab in LABELS]
    shown = [a for a in rows if a.images]
    assert len(shown) == 7 and "not shown" in rows[1].texts[0].get_text()  # no xa at the centre
    montage = [a for a in fig.axes if a.images and not a.get_ylabel()]
    assert montage[0].images[0].get_array().shape == (30, 5 * 30 + 4 * 2)


def test_figure_spec_from_the_sweep(tmp_path: Path) -> None:
    assert FigureSpec.for_experiment(tmp_path) == FigureSpec()
    atomic_write_json(tmp_path / "spec.json", {"figures": {"spacings": [60, 120], "far_target": 360}})
    assert FigureSpec.for_experiment(tmp_path) == FigureSpec((60.0, 120.0), 0.0, 360.0)
    with pytest.raises(ValueError, match="valid"):
        FigureSpec.from_json({"spacing": [60]})


def test_draw_all_writes_png_and_pdf(broken: Broken, tmp_path: Path) -> None:
    figures = FigureSpec(spacings=(120.0, 240.0), center_target=0.0, far_target=360.0)
    paths = plots.draw_all(broken.exp, broken.table, rt.selection_table(broken.exp), figures, tmp_path / "figs",
                           stimulus=StimulusConfig(), source=SourceConfig(), dpi=60)
    names = {str(p.relative_to(tmp_path / "figs")) for p in paths}
    for model in (A.name, B.name):
        for stem in ("spacing_120", "spacing_240", "target_0", "target_360", "heatmap", "training"):
            assert {f"{model}/{stem}.png", f"{model}/{stem}.pdf"} <= names
    assert {f"{C.name}/training.png", "stimuli.png", "stimuli.pdf"} <= names
    for p in paths:
        head = p.read_bytes()[:5]
        assert head == (b"\x89PNG\r" if p.suffix == ".png" else b"%PDF-"), p


def test_notebook_executes(broken: Broken, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("CROWDING_EXPERIMENT", str(broken.exp))
    run_notebook(nb, NOTEBOOK.parent, tmp_path, monkeypatch)  # asserts no connection file is left behind
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert str(broken.exp) in outputs[0]["text"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 5
