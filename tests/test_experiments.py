"""The paper's other experiments: DCNN configurations, the letters flanker set, the four sweeps'
plans and tiny end-to-end runs (debug executor), and the comparison figures read back from their axes."""

from __future__ import annotations

import dataclasses
import io
import socket
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fake_experiment import FakeGrid, FakeModel, write_fake_experiment
from helpers import run_notebook
from PIL import Image

from ecc import sources
from ecc.model import DCNN_POOLINGS, EccNet, ModelConfig, count_parameters, dcnn, reference_forward
from ecc.sources import letters
from ecc.stimuli import render
from results import compare, drawing
from results import table as rt
from results.figspec import Comparison, FigureSpec
from sweeps import dcnn as dcnn_sweep
from sweeps import demo, flanker_training, launch, pooling, similarity
from sweeps.claims import measurable
from sweeps.pipeline import Pipeline
from sweeps.spec import EvalGrid, SweepSpec

SWEEPS = {"dcnn": dcnn_sweep, "pooling": pooling, "similarity": similarity, "flanker-training": flanker_training}


# ----------------------------------------------------------------------------- DCNN = one-scale EccNet
# (pooling, feature-map sides: input, then after each layer's conv and pool, on 60x60 inputs; linear
# inputs; parameters): the paper's 60-27-11-1 for progressive pooling (docs/experiments.md)
DCNN_60 = {
    "no_total_pool": ([60, 56, 54, 50, 48, 44, 42], 42 * 42 * 32, 334_341),
    "progressive": ([60, 56, 27, 23, 11, 7, 1], 32, 52_261),
    "at_end": ([60, 56, 54, 50, 48, 44, 1], 32, 52_261),
}


def map_sides(net: EccNet, side: int) -> list[int]:
    """The input's side, then each layer's conv and pool output sides, from a forward pass (hooks)."""
    sides = [side]
    hooks = [m.register_forward_hook(lambda _m, _i, out: sides.append(out.shape[-1]))
             for layer in net.layers for m in (layer.conv, layer.spatial_pool)]
    try:
        out = net(torch.rand(2, 1, side, side))
    finally:
        for h in hooks:
            h.remove()
    assert out.shape == (2, 5)
    return sides


@pytest.mark.parametrize("pooling", list(DCNN_POOLINGS))
def test_dcnn_map_sides_and_parameter_counts(pooling: str) -> None:
    cfg = dcnn(pooling)
    sides, features, params = DCNN_60[pooling]
    assert cfg.num_layers == 3 and cfg.num_scales == 1 and cfg.feats_per_layer == 32
    assert all(s.kernel == 5 and s.scale_window == 1 for s in cfg.layer_shapes(60))  # 5x5 convs, no scale pooling
    assert cfg.features(60) == features
    net = EccNet(cfg, 60)
    assert map_sides(net, 60) == sides
    assert [60] + [n for s in cfg.layer_shapes(60) for n in (s.conv_size, s.pool_size)] == sides  # the plan agrees
    assert count_parameters(net) == params
    # 3 convs (832 + 25,632 + 25,632) and one linear layer, nothing else
    assert [p.numel() for p in net.parameters()] == [800, 32, 25600, 32, 25600, 32, features * 5, 5]
    x = torch.rand(3, 1, 60, 60)
    torch.testing.assert_close(net(x), reference_forward(net, x), rtol=1e-4, atol=2e-4)  # float32 sums of 56k terms


def test_the_quick_dcnns_geometry() -> None:
    """The quick sweep's 32x32 DCNNs: progressive ends at 1x1 like the full one, but its last
    convolution is 1x1 (a 4 px map is smaller than the 5x5 kernel); the others keep 5x5 kernels."""
    crop = dcnn_sweep.sweep(quick=True).model_config("dcnn_progressive_field3").stimulus.crop_size
    assert crop == 32
    assert map_sides(EccNet(dcnn("progressive"), crop), crop) == [32, 28, 13, 9, 4, 4, 1]
    assert [s.kernel for s in dcnn("progressive").layer_shapes(crop)] == [5, 5, 1]
    assert map_sides(EccNet(dcnn("at_end"), crop), crop) == [32, 28, 26, 22, 20, 16, 1]
    assert map_sides(EccNet(dcnn("no_total_pool"), crop), crop) == [32, 28, 26, 22, 20, 16, 14]


def test_dcnn_sees_the_whole_field_in_one_crop() -> None:
    stim = dcnn_sweep.dcnn_stimulus(120, 60)
    assert stim.field_size == 360 and stim.num_scales == 1 and stim.shape == (1, 60, 60)
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 4:24] = 255  # a 20 px ink box, as MNIST's digits
    img = render(digit[None], stim, target_ecc=np.array([120.0]))[0, 0]  # the target at the field's edge
    cols = np.flatnonzero(img.max(0) > 0)
    assert img.shape == (60, 60) and cols.max() >= 55  # the far right of the field is in the one crop
    assert 12 <= len(cols) <= 16  # 120 * 20/28 px of ink -> ~14 of 60 px


def test_dcnn_rejects_unknown_pooling() -> None:
    with pytest.raises(ValueError, match="no_total_pool, progressive, at_end"):
        dcnn("sometimes")
    assert ModelConfig(pm="1-1-1-1", pool_stride=2, total_pool=True) == dcnn("progressive")


# ----------------------------------------------------------------------------- letters
def test_letters_are_deterministic_and_drawn_like_mnist() -> None:
    a, la = letters.render_letters(60, seed=7)
    b, lb = letters.render_letters(60, seed=7)
    c, _ = letters.render_letters(60, seed=8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)
    assert a.dtype == np.uint8 and a.shape == (60, 28, 28)
    assert list(la[:12]) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    sides = [max(len(np.flatnonzero(g.max(1) > 0)), len(np.flatnonzero(g.max(0) > 0))) for g in a]
    assert min(sides) >= 17 and max(sides) <= 24  # ink's longer side ~20 px (+-10%), as MNIST's digits
    assert len({g.tobytes() for g in a}) == 60  # jitter: no two glyphs alike


def test_letters_split_is_cached_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.socket

    def no_network(family=socket.AF_INET, *args, **kwargs):
        if family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError("the letters set must not touch the network")
        return real(family, *args, **kwargs)  # local pipes (asyncio's) are fine

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(letters, "SPLIT_SIZES", {**letters.SPLIT_SIZES, "test": 40})
    letters._load.cache_clear()
    monkeypatch.setenv("CROWDING_DATA", str(tmp_path))
    images = sources.flanker_images("letters", "test")
    path = letters.cache_path(tmp_path / "letters", "test")
    assert path.is_file() and images.shape == (40, 28, 28) and not images.flags.writeable
    np.testing.assert_array_equal(images, letters.render_letters(40, letters.SPLIT_SEEDS["test"])[0])
    sheet = np.asarray(Image.open(path.with_suffix(".png")))
    assert sheet.shape == (5 * 30 * 2, 20 * 30 * 2) and sheet.max() == 255  # the sample sheet
    letters._load.cache_clear()
    mtime = path.stat().st_mtime_ns
    np.testing.assert_array_equal(sources.flanker_images("letters", "test"), images)  # loaded, not rebuilt
    assert path.stat().st_mtime_ns == mtime
    pairs = sources.pairs("test", "even", "letters")
    assert len(pairs.flankers) == len(pairs.targets)
    np.testing.assert_array_equal(pairs.flankers[40:80], images)  # cycled
    letters._load.cache_clear()


def test_a_sweep_needing_a_missing_set_exits_2_before_submitting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("CROWDING_DATA", str(tmp_path / "data"))
    base = similarity.sweep(quick=True)
    spec = dataclasses.replace(base, name="needs-notmnist",
                               grid=dataclasses.replace(base.grid, flanker_dsets=(*base.grid.flanker_dsets, "notMNIST")))
    monkeypatch.setattr(launch, "available_sweeps", lambda: {"needs-notmnist": lambda quick: spec})
    with pytest.raises(SystemExit) as e:
        launch.main(["needs-notmnist", "--executor", "debug", "--out", str(tmp_path / "exp")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "notMNIST" in err and str(tmp_path / "data" / "notMNIST") in err and "notMNIST-to-MNIST" in err
    assert not (tmp_path / "exp" / "needs-notmnist" / "plan.json").exists()


def test_the_similarity_plan_names_its_optional_data_and_never_probes(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROWDING_DATA", str(tmp_path / "data"))
    before = similarity.sweep(quick=True)
    (tmp_path / "data" / "omniglot").mkdir(parents=True)
    (tmp_path / "data" / "omniglot" / "a.png").write_bytes(b"")
    assert similarity.sweep(quick=True) == before  # a folder filled here changes nothing
    assert before.name == "similarity-quick" and before.grid.flanker_dsets == ("MNIST", "letters")
    more = similarity.sweep(quick=True, extra_flankers=("omniglot",), places=True)
    assert more.name == "similarity+omniglot+places-quick"
    assert more.grid.flanker_dsets == ("MNIST", "letters", "omniglot")
    assert "11-1-1-1-1_isolated_places" in dict(more.models)
    with pytest.raises(sources.MissingDataError, match="places"):  # asked for, not there: refused
        more.check_data()
    with pytest.raises(ValueError, match="extra_flankers 'MNIST' is not one of notMNIST, omniglot"):
        similarity.sweep(extra_flankers=("MNIST",))


# ----------------------------------------------------------------------------- the sweeps' plans
def dry_run(name: str, out: Path, quick: bool) -> list[str]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = launch.main([name, "--dry-run", "--out", str(out), *(["--quick"] if quick else [])])
    assert rc == 0
    return buf.getvalue().splitlines()


PLANS = {  # (quick, sweep) -> lines the plan must hold
    (False, "dcnn"): ["[train] 33 jobs (11 models x 3 learning rates", "with fields of 3, 5, 8 digits",
                      "[eval] dcnn_progressive_field3: 6 conditions of the 336-point grid",
                      "[eval] dcnn_progressive_field8: 38 conditions of the 336-point grid",
                      "[eval] ecc_11-1-1-1-1: 154 conditions of the 336-point grid",
                      "[eval] ecc_11-1-1-1-1_areafactor: 154 conditions of the 336-point grid",
                      "  dcnn_at_end_field5 crowds more than ecc_11-1-1-1-1_areafactor at the centre: "],
    (True, "dcnn"): ["[train] 7 jobs (7 models x 1 learning rates [0.1])", "field 144, crops 1x32^2",
                     "field 240, crops 1x32^2", "[eval] dcnn_at_end_field3: 5 conditions of the 216-point grid",
                     "[eval] dcnn_at_end_field5: 12 conditions of the 216-point grid",
                     "  dcnn_at_end_field5 crowds more than ecc_11-1-1-1-1 at the centre: "],
    (False, "pooling"): ["[train] 18 jobs (6 models x 3 learning rates", "pm_11-7-5-3-1 lr=0.001",
                         "pm_11-7-5-3-1_areafactor lr=0.001", "[eval] pm_11-11-11-11-1: 154 conditions",
                         "[eval] pm_11-11-11-11-1_areafactor: 154 conditions",
                         "  early pooling crowds more (areafactor): mean over x of [a(target x) - xax(target x, "
                         "spacing 120) - a(target x) of pm_11-11-11-11-1_areafactor"],
    (True, "pooling"): ["[train] 3 jobs (3 models x 1 learning rates", "[eval] pm_5-4-3-2-1: 48 conditions",
                        "crops 5x24^2", "contrast None"],
    (False, "similarity"): ["tested with flankers MNIST, letters",
                            "[eval] 11-1-1-1-1_isolated: 294 conditions of the 672-point grid",
                            "a 14, ax 98, xa 84, xax 98", "[train] 12 jobs (4 models x 3 learning rates",
                            "[eval] dcnn_progressive: 9 conditions of the 672-point grid"],
    (True, "similarity"): ["[train] 2 jobs (2 models", "[eval] 11-1-1-1-1_isolated: 176 conditions",
                           "dcnn_progressive lr=0.1: 4 epochs", "[eval] dcnn_progressive: 8 conditions"],
    (False, "flanker-training"): ["[train] 24 jobs (8 models x 3 learning rates",
                                  "[eval] ecc_11-1-1-1-1_train_xax: 154 conditions"],
    (True, "flanker-training"): ["[train] 4 jobs", "dcnn_at_end_train_xa lr=0.1"],
    (False, "demo"): ["  closer flankers crowd more: mean over x of [xax(target x, spacing 240) - xax(target x, "
                      "spacing 120)]; on 11-1-1-1-1_total_pool_contrast_areafactor, 11-1-1-1-1_total_pool_contrast_"
                      "None at targets 0, 120, 240, 360, 480, 600"],
    (True, "demo"): ["  robust at the centre: a(target 288) - xax(target 288, spacing 48) - a(target 0) + xax(target 0,"
                     " spacing 48); on 11-1-1-1-1_total_pool_contrast_None at fixed targets 288, 0"],
}


@pytest.mark.parametrize(("quick", "name"), list(PLANS))
def test_dry_run_plans(quick: bool, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROWDING_DATA", str(tmp_path / "data"))  # no optional sets
    text = "\n".join(dry_run(name, tmp_path, quick))
    for line in PLANS[(quick, name)]:
        assert line in text, f"{line!r} not in the plan:\n{text}"
    module = {**SWEEPS, "demo": demo}[name]
    spec_claims = module.sweep(quick).claims
    assert f"[collect] findings.md tests {len(spec_claims)} claims" in text
    for claim in spec_claims:  # each claim with its terms and the positions planned per model
        assert f"  {claim.name}: {claim.formula()}; on " in text, claim.name
    assert not (tmp_path / (name + ("-quick" if quick else ""))).exists()  # a plan writes nothing


def test_each_sweep_states_its_claim_and_measure() -> None:
    for module in SWEEPS.values():
        doc = module.__doc__
        assert "Claim tested:" in doc and "Measured by:" in doc and "--quick" in doc


def test_flanker_training_models_and_spacings() -> None:
    spec = flanker_training.sweep(quick=False)
    cfgs = dict(spec.models)
    sides = {"train_a": (0, 0.0), "train_ax": (1, 120.0), "train_xa": (1, -120.0), "train_xax": (2, 120.0)}
    assert {n: (c.flanker_type, c.flanker_ecc - c.target_ecc) for n, c in cfgs.items()} == {
        f"{family}_{name}": side for family in flanker_training.FAMILIES for name, side in sides.items()}
    dcnn = cfgs["dcnn_at_end_train_xax"]
    assert (dcnn.stimulus.num_scales, dcnn.stimulus.field_size, dcnn.model.pm) == (1, 600, "1-1-1-1")
    assert {n for n, _ in flanker_training.sweep(quick=True).models} == {f"dcnn_at_end_{n}" for n in sides}
    assert [c.spacing for c in spec.figures.comparisons if c.kind == "matrix"] == [120.0, 240.0]


# ----------------------------------------------------------------------------- tiny end-to-end runs
def tiny(spec: SweepSpec, targets: tuple[float, ...], flankers: tuple[float, ...]) -> SweepSpec:
    """The same sweep at seconds' size: 64 training images, one epoch, 12 test images per condition."""
    models = tuple((n, dataclasses.replace(c, train_images=64, num_epochs=1, batch_size=32, validation_size=40))
                   for n, c in spec.models)
    grid = dataclasses.replace(spec.grid, target_eccs=targets, flanker_eccs=flankers, test_images=12)
    return dataclasses.replace(spec, models=models, conditions_per_job=64, grid=grid,
                               claims=measurable(spec.claims, models, grid))  # the claims the tiny grid has


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SWEEPS))
def test_tiny_end_to_end_with_the_debug_executor(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROWDING_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(letters, "SPLIT_SIZES", {"train": 50, "validation": 20, "test": 30})
    letters._load.cache_clear()
    spec = tiny(SWEEPS[name].sweep(quick=True), (0.0, 48.0), (0.0, 48.0, 96.0, 144.0))
    lines: list[str] = []
    rc = Pipeline(spec, tmp_path / spec.name, executor="debug", echo=lines.append, progress=False).run()
    letters._load.cache_clear()
    assert rc == 0, "\n".join(lines)
    df = pd.read_csv(tmp_path / spec.name / "results.csv")
    assert set(df["model"]) == {n for n, _ in spec.models}
    assert (df["state"] == "done").all() and (df["n_images"] == 12).all()
    if name == "similarity":
        assert set(df["flanker_dset"]) == {"MNIST", "letters"}
    compare = tmp_path / spec.name / "figures" / "compare"
    assert sorted(p.stem for p in compare.glob("*.png")) == sorted(c.stem for c in spec.figures.comparisons)


# ----------------------------------------------------------------------------- comparison figures
GRID = FakeGrid(target_eccs=(0.0, 120.0, 240.0, 360.0), flanker_eccs=(0.0, 120.0, 240.0, 360.0, 480.0))
A = FakeModel("areafactor", robustness=0.7)
B = FakeModel("None", robustness=0.2)
SPEC = FigureSpec(spacings=(120.0,), center_target=0.0, far_target=360.0)


@pytest.fixture(scope="module")
def fake_table(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    fake = write_fake_experiment(tmp_path_factory.mktemp("cmp"), name="cmp", grid=GRID, models=(A, B),
                                 learning_rates=(0.01,), n_images=300, epochs=2)
    return rt.collect(fake.path)


def data_lines(ax) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {ln.get_gid(): (np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float))
            for ln in ax.get_lines() if ln.get_gid()}


def error_bars(ax, label: str) -> list[tuple[float, float]]:
    cont = next(c for c in ax.containers if c.get_label() == label)
    return [(s[0, 1], s[1, 1]) for s in map(np.asarray, cont.lines[2][0].get_segments())]


def test_spacing_comparison_has_one_curve_per_model(fake_table: pd.DataFrame) -> None:
    fig = compare.comparison_figure(fake_table, Comparison(kind="spacing", label="xax", spacing=120), SPEC)
    ax = fig.axes[0]
    got = data_lines(ax)
    assert set(got) == {A.name, B.name, drawing.CHANCE_LABEL}
    assert got[drawing.CHANCE_LABEL][1][0] == pytest.approx(0.2)
    for model in (A.name, B.name):
        rows = fake_table[(fake_table["model"] == model) & (fake_table["label"] == "xax")
                          & np.isclose(fake_table["spacing"], 120)].sort_values("target_ecc")
        np.testing.assert_array_equal(got[model][0], rows["target_ecc"].to_numpy(float))
        np.testing.assert_array_equal(got[model][1], rows["accuracy"].to_numpy(float))
        np.testing.assert_allclose(error_bars(ax, model), rows[["ci_low", "ci_high"]].to_numpy(float), atol=1e-12)
    # the more robust model is above the other at every eccentricity (the fake's robustness)
    assert (got[A.name][1] > got[B.name][1]).all()


def test_center_comparison_pools_per_model(fake_table: pd.DataFrame) -> None:
    comp = Comparison(kind="center", label="xax", spacing=120, off_target=240)
    ax = compare.comparison_figure(fake_table, comp, SPEC).axes[0]
    got = data_lines(ax)
    order = sorted((A.name, B.name))  # the table's order (sorted by model)
    assert [t.get_text() for t in ax.get_xticklabels()] == order
    for series, label, target in (("a at 0", "a", 0.0), ("xax at 0", "xax", 0.0), ("xax at 240", "xax", 240.0)):
        ys = []
        for model in order:
            sel = fake_table[(fake_table["model"] == model) & (fake_table["label"] == label)
                             & (fake_table["target_ecc"] == target)]
            if label != "a":
                sel = sel[np.isclose(sel["spacing"], 120)]
            assert len(sel) == 1
            ys.append(sel["accuracy"].iloc[0])
        np.testing.assert_allclose(got[series][1], ys, rtol=0, atol=1e-4)  # rounded in result.json


def test_matrix_comparison_and_by_flanker_set(fake_table: pd.DataFrame) -> None:
    comp = Comparison(kind="matrix", spacing=120)
    fig = compare.comparison_figure(fake_table, comp, SPEC)
    image = next(im for im in fig.axes[0].images if im.get_gid() == "matrix")
    shown = np.asarray(image.get_array(), float)
    assert shown.shape == (2, 4)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == sorted((A.name, B.name))
    for i, model in enumerate(sorted((A.name, B.name))):
        rows = fake_table[fake_table["model"] == model]
        for j, label in enumerate(rt.LABELS):
            sel = rows[rows["label"] == label]
            if label != "a":
                sel = sel[np.isclose(sel["spacing"], 120)]
            expected = sel["n_correct"].sum() / sel["n_images"].sum() if len(sel) else np.nan
            np.testing.assert_allclose(shown[i, j], expected)
    # by flanker set: one curve per set of the first model (the fake has MNIST only)
    by_set = compare.comparison_curves(fake_table, Comparison(kind="spacing", label="xa", by="flanker_dset"), SPEC)
    assert list(by_set) == ["MNIST"] and by_set["MNIST"].has_data


def test_figure_spec_round_trips_comparisons() -> None:
    spec = dcnn_sweep.sweep(quick=False).figures
    again = FigureSpec.from_json(SweepSpec.to_json(dcnn_sweep.sweep(quick=False))["figures"])
    assert again == spec and len(spec.comparisons) == 2
    with pytest.raises(ValueError, match="spacing, center, matrix"):
        Comparison(kind="bars")
    assert EvalGrid((0,), (0,)).flanker_dsets == ("MNIST",)


def test_notebook_shows_the_experiments_comparisons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    from core.atomic import atomic_write_json
    from core.identity import to_jsonable

    fake = write_fake_experiment(tmp_path, name="cmp", grid=GRID, models=(A, B), learning_rates=(0.01,),
                                 n_images=100, epochs=2)
    comps = (Comparison(kind="spacing", label="xax", spacing=120), Comparison(kind="matrix", spacing=240))
    atomic_write_json(fake.path / "spec.json", {"figures": to_jsonable(dataclasses.replace(SPEC, comparisons=comps))})
    notebook = Path(__file__).resolve().parents[1] / "notebooks" / "summary.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    monkeypatch.setenv("CROWDING_EXPERIMENT", str(fake.path))
    run_notebook(nb, notebook.parent, tmp_path, monkeypatch)  # asserts no connection file is left behind
    cell = next(c for c in nb.cells if c.cell_type == "code" and "comparison_figure" in c.source)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in cell.outputs)
    assert [c.stem for c in comps] == printed.split()
    assert sum("image/png" in o.get("data", {}) for o in cell.outputs) == 2


def test_docs_examples_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "experiments.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "docs/experiments.md", "exec"), {})
    out = capsys.readouterr().out
    assert "52261" in out and "['spacing_xax_spacing_120', 'matrix_spacing_240']" in out
    assert (tmp_path / "letters-sheet.png").is_file()  # written where the example runs


def test_random_shifts_at_the_minimum_spacing_render() -> None:
    """Flankers at exactly the minimum spacing, on either side (flanker-training's train_xa):
    target + spacing in floating point may fall a rounding error short of it."""
    from ecc.stimuli import check_placement, sample_random_shifts

    cfg = flanker_training.sweep(quick=True).models[0][1].stimulus
    short = 0
    for spacing in (-48.0, 48.0):
        t, f = sample_random_shifts(cfg, 5000, np.random.default_rng(0), 1, spacing)
        short += int((np.abs(f - t) < 48).sum())
        for a, b in zip(t, f, strict=True):
            check_placement(cfg, a, 1, b)  # accepted, rounding or not
    assert short  # the rounding does happen
