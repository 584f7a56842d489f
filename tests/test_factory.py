"""Networks of your own (ecc/factory.py): a factory named by file or module, its identity and provenance,
the one-line refusals before anything is written, parameters and FLOPs, timm, and a tiny sweep end to end
from a file outside the repository."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

from core.identity import non_default
from ecc.config import TrainConfig, claim_folder, provenance, write_train_config
from ecc.factory import cost
from ecc.model import ModelConfig, build, dcnn
from sweeps import architectures, demo, launch, smoke

ROOT = Path(__file__).resolve().parents[1]

GOOD = '''
from torch import nn

def make(num_classes, in_chans, input_size, width=4):
    return nn.Sequential(nn.Conv2d(in_chans, width, 3), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))
'''

SWEEP = '''
import dataclasses
from ecc.model import ModelConfig
from sweeps import smoke

def sweep(quick: bool = False):
    spec = smoke.sweep(quick)
    name, config = spec.models[0]
    model = ModelConfig(factory={factory!r}, factory_kwargs={{"width": 4}}, view={view!r})
    return dataclasses.replace(spec, name="mine", learning_rates=[0.1],
                               models=[("mine", dataclasses.replace(config, model=model))])
'''


def write_sweep(folder: Path, factory: str, view: str = "scales") -> Path:
    path = folder / "sweep_mine.py"
    path.write_text(SWEEP.format(factory=factory, view=view))
    return path


def launch_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The launcher's one line for a usage error (exit 2)."""
    with pytest.raises(SystemExit) as exc:
        launch.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    return err


# ------------------------------------------------------------------ identity
def test_the_default_model_keeps_every_existing_hash() -> None:
    """The factory fields at their defaults are not part of any hash: the architectures sweep's
    eccentricity model is the quick demo's run at lr 0.1 (one folder), and its known hash."""
    assert non_default(ModelConfig()) == {}
    arch = {r.model: r.hash for r in architectures.sweep(True).train_runs()}
    ours = {r.config.learning_rate: r.hash for r in demo.sweep(True).train_runs()}
    assert arch["ecc_11-1-1-1-1"] == ours[0.1] == "5564bc1b6ed1"


def test_the_factory_and_its_arguments_are_the_identity(tmp_path: Path) -> None:
    (tmp_path / "nets.py").write_text(GOOD)
    ref = f"{tmp_path / 'nets.py'}:make"
    a = ModelConfig(factory=ref, factory_kwargs={"width": 4, "depth": 1})
    assert a == ModelConfig(factory=ref, factory_kwargs='{"depth": 1, "width": 4}')  # canonical JSON
    assert non_default(a) == {"factory": ref, "factory_kwargs": '{"depth":1,"width":4}'}
    assert len({a, ModelConfig(factory=ref, factory_kwargs={"width": 8}), ModelConfig(factory=ref),
                ModelConfig(factory=ref, view="field")}) == 4
    with pytest.raises(ValueError, match=r"pm \(the eccentricity model's\) must keep their defaults"):
        ModelConfig(factory=ref, pm="4-1-1-1")
    with pytest.raises(ValueError, match="view 'field' is for a factory model"):
        ModelConfig(view="field")
    with pytest.raises(ValueError, match="are given by the stimulus"):
        ModelConfig(factory=ref, factory_kwargs={"num_classes": 3})


def test_a_relative_file_reference_is_stored_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "nets.py").write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    assert ModelConfig(factory="nets.py:make").factory == f"{tmp_path / 'nets.py'}:make"


def test_the_seed_draws_the_weights_and_leaves_torch_alone(tmp_path: Path) -> None:
    (tmp_path / "nets.py").write_text(GOOD)
    cfg = ModelConfig(factory=f"{tmp_path / 'nets.py'}:make")
    state = torch.random.get_rng_state()
    a, b, c = (build(cfg, 16, seed=s, num_scales=4).state_dict() for s in (1, 1, 2))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["net.0.weight"], c["net.0.weight"])


# ------------------------------------------------------------------ views and cost
def test_views_give_the_factory_its_channels_and_the_widest_crop(tmp_path: Path) -> None:
    (tmp_path / "nets.py").write_text(GOOD)
    ref = f"{tmp_path / 'nets.py'}:make"
    scales = build(ModelConfig(factory=ref), 16, num_scales=4)
    field = build(ModelConfig(factory=ref, view="field"), 16, num_scales=4)
    assert scales.net[0].in_channels == 4 and field.net[0].in_channels == 1
    x = torch.zeros(2, 4, 16, 16)
    x[:, -1] = 1.0  # only the widest crop (the whole field) differs from zeros
    field.eval()
    assert not torch.equal(field(x), field(torch.zeros_like(x)))
    x[:, -1] = 0.0
    x[:, 0] = 1.0
    assert torch.equal(field(x), field(torch.zeros_like(x)))
    with pytest.raises(ValueError, match="widest crop as the whole field"):
        TrainConfig(stimulus=smoke.TINY.__class__(**{**smoke.TINY.__dict__, "fovea": "linear"}),
                    model=ModelConfig(factory=ref, view="field"))


def test_flops_counted_by_torch_equal_the_eccnet_formula() -> None:
    """The FLOP counter (ecc.factory.cost) agrees with the analytic count of the paper's networks."""
    for cfg, shape in ((ModelConfig(), (11, 24, 24)), (dcnn("progressive"), (1, 60, 60))):
        net = build(cfg, shape[-1], num_scales=shape[0])
        assert cost(net, shape) == {"params": sum(p.numel() for p in net.parameters()),
                                    "flops": cfg.flops_per_image(shape[-1])}


def test_the_dry_run_lists_parameters_and_flops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "nets.py").write_text(GOOD)
    sweep = write_sweep(tmp_path, str(tmp_path / "nets.py") + ":make")
    assert launch.main([str(sweep), "--dry-run", "--executor", "local", "--out", str(tmp_path / "exps")]) == 0
    out = capsys.readouterr().out
    # conv 3x3 4->4 on 16x16 -> 14x14 maps, linear 4 -> 5: 2*(14*14*4*4*9) + 2*4*5 FLOPs
    assert (f"[network] mine: {tmp_path / 'nets.py'}:make (scales view), input 4x16x16, 173 parameters, "
            "56,488 forward FLOPs per image") in out.splitlines()
    assert not (tmp_path / "exps").exists()


# ------------------------------------------------------------------ refusals, before anything is written
BROKEN = {
    "missing file": ("gone.py:make", None, "cannot import {dir}/gone.py: no such file"),
    "missing module": ("no_such_lab.nets:make", None, "cannot import module no_such_lab.nets (ModuleNotFoundError"),
    "import error": ("nets.py:make", "import no_such_dependency\n", "cannot import {dir}/nets.py (ModuleNotFoundError"),
    "no attribute": ("nets.py:build", GOOD, "has no attribute 'build' (callables there: make)"),
    "not callable": ("nets.py:make", "make = 3\n", "nets.py:make is not callable (it is a int)"),
    "not a module": ("nets.py:make", "def make(**kw):\n    return 'a net'\n", "returned a str, not a torch.nn.Module"),
    "wrong logits": ("nets.py:make", GOOD.replace("nn.Linear(width, num_classes)", "nn.Linear(width, 7)"),
                     "logits of shape (2, 7) for a sample batch of shape (2, 4, 16, 16); expected (2, 5)"),
    "fails on a batch": ("nets.py:make", GOOD.replace("in_chans, width", "3, width"),
                         "its network fails on a sample batch of shape (2, 4, 16, 16) (RuntimeError"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_wrong_factory_exits_2_with_one_line_before_anything_is_written(
        case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    ref, source, message = BROKEN[case]
    if source is not None:
        (tmp_path / ref.split(":")[0]).write_text(source)
    monkeypatch.chdir(tmp_path)
    sweep = write_sweep(tmp_path, ref)
    err = launch_error([str(sweep), "--executor", "debug", "--out", "exps"], capsys)
    assert message.format(dir=tmp_path) in err
    assert not (tmp_path / "exps").exists()


def test_a_changed_factory_source_under_a_run_is_refused_naming_both_digests(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nets = tmp_path / "nets.py"
    nets.write_text(GOOD)
    sweep = write_sweep(tmp_path, f"{nets}:make")
    run = launch.load_sweep(str(sweep))(False).train_runs()[0]
    exp = tmp_path / "exps" / "mine"
    write_train_config(exp / run.dir, run.config, model=run.model)  # as the launcher writes it
    old = json.loads((exp / run.dir / "config.json").read_text())
    assert old["factory_source"] == str(nets) and re.fullmatch("[0-9a-f]{64}", old["factory_sha256"])
    assert launch.main([str(sweep), "--dry-run", "--executor", "debug", "--out", str(tmp_path / "exps")]) == 0
    capsys.readouterr()
    nets.write_text(GOOD.replace("width=4", "width=5"))  # the same reference, another network
    err = launch_error([str(sweep), "--executor", "debug", "--out", str(tmp_path / "exps")], capsys)
    now = hashlib.sha256(nets.read_bytes()).hexdigest()
    assert f"run {exp / run.dir} was trained with factory" in err
    assert f"had sha256 {old['factory_sha256']}; it is {now} now" in err
    assert json.loads((exp / run.dir / "config.json").read_text()) == old  # nothing rewritten
    with pytest.raises(ValueError, match=f"had sha256 {old['factory_sha256']}; it is {now} now"):
        claim_folder(exp / run.dir, run.config)  # what a training job does first, if it started now


def test_a_module_factory_records_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mylab").mkdir()
    (tmp_path / "mylab" / "__init__.py").write_text("")
    (tmp_path / "mylab" / "nets.py").write_text(GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = TrainConfig(stimulus=smoke.TINY, model=ModelConfig(factory="mylab.nets:make"))
    assert cfg.model.factory == "mylab.nets:make"  # a module reference is stored as written
    assert provenance(cfg) == {"factory_source": str(tmp_path / "mylab" / "nets.py"),
                               "factory_sha256": hashlib.sha256(GOOD.encode()).hexdigest()}


# ------------------------------------------------------------------ timm
HAS_TIMM = importlib.util.find_spec("timm") is not None


@pytest.mark.skipif(HAS_TIMM, reason="timm is importable here: its absence cannot be tested")
def test_timm_missing_exits_2_saying_what_to_install(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = write_sweep(tmp_path, "timm:resnet18")
    err = launch_error([str(sweep), "--executor", "debug", "--out", str(tmp_path / "exps")], capsys)
    assert "timm models need timm, which cannot be imported here" in err and "pip install timm torchvision" in err
    assert not (tmp_path / "exps").exists()


@pytest.mark.skipif(not HAS_TIMM, reason="timm cannot be imported here (pip install timm and a torchvision "
                                         "built for this torch)")
def test_a_timm_model_by_name_takes_the_crops(tmp_path: Path) -> None:
    net = build(ModelConfig(factory="timm:resnet18"), 32, num_scales=4)
    assert net(torch.zeros(2, 4, 32, 32)).shape == (2, 5)


# ------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_a_factory_from_a_file_outside_the_repository_runs_a_tiny_sweep(tmp_path: Path) -> None:
    from results.table import load, load_selection

    nets = tmp_path / "lab" / "nets.py"
    nets.parent.mkdir()
    nets.write_text(GOOD)
    sweep = write_sweep(tmp_path, f"{nets}:make", view="field")
    assert launch.main([str(sweep), "--executor", "debug", "--out", str(tmp_path / "exps")]) == 0
    exp = tmp_path / "exps" / "mine"
    table, selection = load(exp), load_selection(exp)
    assert (table["state"] == "done").all() and len(table) > 0
    assert set(table["factory"]) == {f"{nets}:make"} and set(table["view"]) == {"field"}
    # view field: one input channel; conv 3x3 1->4 on 16x16, linear 4 -> 5
    assert set(table["params"]) == set(selection["params"]) == {1 * 4 * 9 + 4 + 4 * 5 + 5}
    assert set(table["flops"]) == {2 * 14 * 14 * 4 * 9 + 2 * 4 * 5}
    config = json.loads(next(exp.glob("train/*/config.json")).read_text())
    assert config["factory_source"] == str(nets) and config["config"]["model"]["view"] == "field"


# ------------------------------------------------------------------ the README's example, from its text
def readme_network(folder: Path) -> tuple[Path, list[list[str]]]:
    """The "Your own network" section's factory and sweep, saved under the names it gives, and its commands."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Your own network"):]
    section = section[:section.index("\n## ", 1)]
    factory, sweep = re.findall(r"```python\n(.*?)```", section, re.S)[:2]
    (folder / "my_nets.py").write_text(factory)
    (folder / "my_net_sweep.py").write_text(sweep)
    commands = re.search(r"```\n(python -m sweeps\.launch my_net_sweep.*?)```", section, re.S).group(1)
    return folder / "my_net_sweep.py", [line.split("#")[0].split()[3:] for line in commands.splitlines()]


def test_the_readme_network_plans_from_the_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _, (dry, _) = readme_network(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert launch.main([*dry, "--out", "exps"]) == 0
    out = capsys.readouterr().out
    assert f"[network] tiny_cnn_scales: {tmp_path / 'my_nets.py'}:tiny_cnn (scales view), input 4x16x16" in out
    assert f"[network] tiny_cnn_field: {tmp_path / 'my_nets.py'}:tiny_cnn (field view), input 4x16x16" in out


@pytest.mark.slow
def test_the_readme_network_runs_as_written(tmp_path: Path) -> None:
    from test_own_sweeps import cli

    _, (_, run) = readme_network(tmp_path)
    assert run[-2:] == ["--executor", "local"]
    proc = cli(*run[:-1], "debug", "--out", "exps", cwd=tmp_path)  # in-process jobs: the same code, faster
    assert proc.returncode == 0, proc.stdout + proc.stderr
    findings = (tmp_path / "exps" / "my-nets" / "findings.md")
    assert findings.is_file() and "tiny_cnn_field" in (tmp_path / "exps" / "my-nets" / "results.csv").read_text()
