"""Sweeps of one's own: a file path or a module instead of a built-in name, specs written with any
sequence (range, list, numpy array), --sbatch split by shell rules, and the README's example run
from the README's text."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sweeps import launch, smoke
from sweeps.spec import EvalGrid, SpecError, SweepSpec

ROOT = Path(__file__).resolve().parents[1]

WRAPPER = '''
import dataclasses
from sweeps import smoke

def sweep(quick: bool = False):
    return dataclasses.replace(smoke.sweep(quick), name="{name}", learning_rates=[0.1])
'''


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "sweeps.launch", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def readme_sweep() -> str:
    """The code block of the README's "Writing a sweep" section, as written there."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Writing a sweep"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def write_readme_sweep(folder: Path) -> Path:
    path = folder / "my_sweep.py"
    path.write_text(readme_sweep())
    return path


# ------------------------------------------------------------------ specs take any sequence


def test_grids_and_specs_normalise_any_sequence_to_tuples() -> None:
    as_tuples = EvalGrid(target_eccs=(0, 40, 80), flanker_eccs=(0, 40), flanker_types=(0, 1))
    mixed = EvalGrid(target_eccs=range(0, 120, 40), flanker_eccs=np.arange(0, 80, 40), flanker_types=[0, 1])
    assert mixed == as_tuples
    assert all(type(v) is int for v in mixed.flanker_eccs)  # numpy scalars become Python ints
    spec = smoke.sweep()
    listed = SweepSpec(name="x", models=[list(m) for m in spec.models], learning_rates=np.array([0.1, 0.01]),
                       grid=mixed)
    assert listed.models == spec.models and listed.learning_rates == (0.1, 0.01)
    json.dumps(listed.to_json())  # what the launcher writes to spec.json: failed for a range


def test_a_spec_refuses_a_non_sequence_naming_it() -> None:
    with pytest.raises(SpecError, match="learning_rates must be a sequence"):
        SweepSpec(name="x", models=smoke.sweep().models, learning_rates=0.1, grid=smoke.sweep().grid)


# ------------------------------------------------------------------ file path, module


def test_a_sweep_file_outside_the_package_launches_like_a_builtin(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mine.py").write_text(WRAPPER.format(name="my-smoke"))
    assert launch.main([str(tmp_path / "mine.py"), "--dry-run", "--executor", "local", "--out", "exps"]) == 0
    out = capsys.readouterr().out
    assert "experiment folder: exps/my-smoke" in out
    assert "[train] 2 jobs (2 models x 1 learning rates [0.1])" in out


def test_a_sweep_module_launches_like_a_builtin(tmp_path: Path) -> None:
    """In a fresh interpreter, as a user types it: the module is found from the working folder."""
    (tmp_path / "mylab").mkdir()
    (tmp_path / "mylab" / "__init__.py").write_text("")
    (tmp_path / "mylab" / "pooling.py").write_text(WRAPPER.format(name="lab-pooling"))
    proc = cli("mylab.pooling", "--dry-run", "--executor", "local", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "experiment folder: experiments/lab-pooling" in proc.stdout


@pytest.mark.parametrize(("name", "message"), [
    ("nope", "unknown sweep 'nope'; available: "),
    ("missing.py", "sweep file 'missing.py' does not exist"),
    ("no_such_pkg.mod", "sweep module 'no_such_pkg.mod' cannot be imported"),
    ("json.decoder", "'json.decoder' has no function sweep(quick: bool) -> SweepSpec"),
])
def test_a_bad_sweep_reference_exits_2_naming_it(name: str, message: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        launch.main([name, "--dry-run"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1, err


# ------------------------------------------------------------------ --sbatch


def test_sbatch_options_split_by_shell_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert launch.main(["smoke", "--dry-run", "--executor", "local", "--out", str(tmp_path),
                        "--sbatch", "qos=high constraint='a100|h100' comment=\"two words\""]) == 0
    out = capsys.readouterr().out
    assert "extra=qos=high constraint=a100|h100 comment=two words" in out
    with pytest.raises(SystemExit) as exc:
        launch.main(["smoke", "--dry-run", "--out", str(tmp_path), "--sbatch", "qos='high"])
    assert exc.value.code == 2
    assert "extra sbatch options \"qos='high\" cannot be split" in capsys.readouterr().err


# ------------------------------------------------------------------ the README's example


def test_the_readme_sweep_plans_and_its_spec_goes_to_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_readme_sweep(tmp_path)
    assert launch.main([str(path), "--dry-run", "--executor", "local"]) == 0
    out = capsys.readouterr().out
    assert "experiment folder: experiments/my-pooling" in out
    assert "[train] 6 jobs (3 models x 2 learning rates [0.1, 0.01])" in out
    spec = launch.load_sweep(str(path))(True)
    assert json.loads(json.dumps(spec.to_json()))["grid"]["target_eccs"] == [0, 40, 80]


@pytest.mark.slow
def test_the_readme_sweep_runs_as_written(tmp_path: Path) -> None:
    """The README's example, launched as the README says (here in-process: --executor debug)."""
    path = write_readme_sweep(tmp_path)
    proc = cli(path.name, "--quick", "--executor", "debug", "--out", "exps", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exp = tmp_path / "exps" / "my-pooling-quick"
    assert json.loads((exp / "spec.json").read_text())["grid"]["target_eccs"] == [0, 40, 80]
    assert "[eval] 24 jobs: 24 done" in proc.stdout.splitlines()


def test_every_sweep_module_is_registered_and_every_registered_name_is_one() -> None:
    """launch.BUILTIN_SWEEPS is the one list of built-in sweeps: a module that defines sweep() and is
    missing from it (or a name there with no such module) fails here, not silently at launch."""
    import importlib
    import pkgutil

    import sweeps
    from sweeps import launch

    defining = set()
    for info in pkgutil.iter_modules(sweeps.__path__):
        if info.name.startswith("_"):  # __main__ runs the launcher
            continue
        module = importlib.import_module(f"sweeps.{info.name}")
        if callable(getattr(module, "sweep", None)):
            defining.add(info.name.replace("_", "-"))
    assert defining == set(launch.BUILTIN_SWEEPS)
    assert sorted(launch.available_sweeps()) == sorted(launch.BUILTIN_SWEEPS)
