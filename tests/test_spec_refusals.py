"""A spec is checked whole before anything is written: each bad input is refused at --dry-run and at
launch alike, with exit status 2, one line that names the bad value, and no file or folder left
behind (no experiment folder, spec.json or lock). The sweeps are files, as a user writes them."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch

from cluster.resources import local_capacity
from sweeps import driver, launch

SWEEP = '''
import math

from ecc.config import TrainConfig
from ecc.model import ModelConfig
from ecc.stimuli import StimulusConfig
from sweeps.spec import Claim, EvalGrid, SweepSpec, Term

FIELD = StimulusConfig(field_size=240, digit_height=40, flanker_height=40, crop_size=16, num_scales=4)
BASE = TrainConfig(stimulus=FIELD, model=ModelConfig(pm="4-1-1-1", feats_per_layer=8), random_shifts=True,
                   num_epochs=1, batch_size=32, train_images=64, validation_size=50)
GRID = dict(target_eccs=(0, 40), flanker_eccs=(80,), flanker_types=(0, 1), test_images=16)


def sweep(quick: bool = False) -> SweepSpec:
    fields = dict(name="tiny-user", models=[("m", BASE)], learning_rates=[0.1], grid=EvalGrid(**GRID))
    {change}
    return SweepSpec(**fields)
'''

# (case, the line that changes the good sweep above, what the one line must name)
BAD_SPECS = {
    "test_images 10.5": ('fields["grid"] = EvalGrid(**{**GRID, "test_images": 10.5})', ["test_images", "10.5"]),
    "test_images True": ('fields["grid"] = EvalGrid(**{**GRID, "test_images": True})', ["test_images", "True"]),
    "flanker type 3": ('fields["grid"] = EvalGrid(**{**GRID, "flanker_types": (0, 3)})',
                       ["flanker_types 3", "0, 1, 2"]),
    "eccentricity as text": ('fields["grid"] = EvalGrid(**{**GRID, "target_eccs": ("0", 40)})',
                             ["target_eccs '0'"]),
    "identical models": ('fields["models"] = [("m", BASE), ("copy", BASE)]', ["'m'", "'copy'", "identical configs"]),
    "learning rates as text": ('fields["learning_rates"] = ["0.1", "0.01"]', ["learning rates", "'0.1'"]),
    "infinite learning rate": ('fields["learning_rates"] = [0.1, math.inf]', ["learning rates", "inf"]),
    "config as a dict": ('fields["models"] = [("m", {"learning_rate": 0.1})]', ["'m'", "TrainConfig", "dict"]),
    "claim off the grid": ('fields["claims"] = (Claim("far", "far flankers", (Term("a"), Term("xax", 1000.0, '
                           'weight=-1))),)', ["claim 'far'", "xax(target x, spacing 1000)", "spacings [40.0, 80.0]"]),
    "claim at a target never planned": ('fields["claims"] = (Claim("edge", "s", (Term("a", target_ecc=7),)),)',
                                        ["claim 'edge'", "a(target 7)", "[0.0, 40.0]"]),
    "claim on an unknown model": ('fields["claims"] = (Claim("c", "s", (Term("a"),), models=("nosuch",)),)',
                                  ["claim 'c'", "'nosuch'", "models: m"]),
}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The users' sweep files, outside each test's tmp_path (which must stay empty)."""
    return tmp_path_factory.mktemp("sweeps")


def sweep_file(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name.replace(' ', '_')}.py"
    path.write_text(text)
    return path


def launch_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
              argv: list[str]) -> tuple[int, str, str]:
    """The launcher as a user runs it from an empty folder: (exit status, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    try:
        rc = launch.main([*argv, "--out", str(tmp_path / "out")])
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def assert_refused(tmp_path: Path, rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not list(tmp_path.iterdir()), sorted(tmp_path.rglob("*"))  # nothing written


@pytest.mark.parametrize("action", [["--dry-run"], []], ids=["dry-run", "launch"])
@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_a_bad_spec_is_refused_whole_before_anything_is_written(case: str, action: list[str], sweep_dir: Path,
                                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    change, needles = BAD_SPECS[case]
    path = sweep_file(sweep_dir, case, SWEEP.format(change=change))
    rc, _, err = launch_in(tmp_path, monkeypatch, capsys, [str(path), "--executor", "debug", *action])
    assert_refused(tmp_path, rc, err, *needles)


def test_a_nan_learning_rate_is_refused_like_an_infinite_one(sweep_dir: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    for value in ("math.nan", "-math.inf", "math.inf"):
        path = sweep_file(sweep_dir, "lr", SWEEP.format(change=f'fields["learning_rates"] = [{value}]'))
        rc, _, err = launch_in(tmp_path, monkeypatch, capsys, [str(path), "--executor", "debug", "--dry-run"])
        assert_refused(tmp_path, rc, err, "learning rates must be positive finite numbers", value.split(".")[-1])


USER_ERRORS = {  # (file text, the line it fails at, what the one line says)
    "name error": (SWEEP.format(change="fields['models'] = modles"), 17, "NameError: name 'modles' is not defined"),
    "exception": (SWEEP.format(change="raise RuntimeError('no GPU quota left')"), 17,
                  "RuntimeError: no GPU quota left"),
    "syntax error": ("def sweep(quick: bool = False):\n    return dict(name='x'\n", 2, "SyntaxError"),
    "error at import": ("import math\nSIZES = [1, 2][5]\n\ndef sweep(quick=False):\n    pass\n", 2,
                        "IndexError: list index out of range"),
}


@pytest.mark.parametrize("action", [["--dry-run"], []], ids=["dry-run", "launch"])
@pytest.mark.parametrize("case", list(USER_ERRORS))
def test_an_error_in_the_users_sweep_file_is_one_line_with_its_file_and_line(
        case: str, action: list[str], sweep_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    text, line, message = USER_ERRORS[case]
    path = sweep_file(sweep_dir, case, text)
    rc, _, err = launch_in(tmp_path, monkeypatch, capsys, [str(path), "--executor", "debug", *action])
    assert_refused(tmp_path, rc, err, f"{path.name} line {line}", message, "--verbose")


def test_verbose_shows_the_traceback_of_the_users_error(sweep_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = sweep_file(sweep_dir, "verbose", USER_ERRORS["name error"][0])
    rc, _, err = launch_in(tmp_path, monkeypatch, capsys, [str(path), "--executor", "debug", "--verbose"])
    assert rc == 2 and "Traceback (most recent call last)" in err, err
    assert f'File "{path}", line 17, in sweep' in err  # the user's own frame
    assert err.strip().splitlines()[-1].endswith("(see --help)") and "NameError" in err.strip().splitlines()[-1]
    assert not list(tmp_path.iterdir())


def test_a_sweep_without_the_quick_parameter_is_refused(sweep_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = sweep_file(sweep_dir, "no_quick", SWEEP.replace("def sweep(quick: bool = False)", "def sweep()")
                      .format(change="pass"))
    for action in (["--dry-run"], ["--quick"], []):
        rc, _, err = launch_in(tmp_path, monkeypatch, capsys, [str(path), "--executor", "debug", *action])
        assert_refused(tmp_path, rc, err, f"{path.name} line 15", "sweep()", "quick")


# ------------------------------------------------------------------ resources that cannot work here


def good_sweep(sweep_dir: Path) -> Path:
    return sweep_file(sweep_dir, "good", SWEEP.format(change="pass"))


@pytest.mark.parametrize("action", [["--dry-run"], []], ids=["dry-run", "launch"])
def test_resources_that_cannot_work_here_are_refused(action: list[str], sweep_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path, cores = good_sweep(sweep_dir), local_capacity().cpus
    cases = [(["--cpus", str(cores + 1)], [f"--cpus {cores + 1}", f"{cores} core", f"at most --cpus {cores}"]),
             (["--mem", "inf"], ["--mem", "inf", "finite"]),
             (["--mem", "nan"], ["--mem", "nan"])]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], ["--device cuda", "no GPU is visible", "cpu"]))
    for options, needles in cases:
        rc, _, err = launch_in(tmp_path, monkeypatch, capsys, [str(path), "--executor", "local", *options, *action])
        assert_refused(tmp_path, rc, err, *needles)


def test_a_sweep_without_resources_fits_this_machine_and_slurm_keeps_the_defaults(
        sweep_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path, cap = good_sweep(sweep_dir), local_capacity()
    rc, out, err = launch_in(tmp_path, monkeypatch, capsys, [str(path), "--executor", "local", "--dry-run"])
    assert rc == 0, err
    train = next(line for line in out.splitlines() if line.startswith("[resources] train:"))
    assert f"gpus={min(1, len(cap.gpus))} cpus={min(8, cap.cpus)} " in train, train
    rc, out, err = launch_in(tmp_path, monkeypatch, capsys, [str(path), "--executor", "slurm", "--dry-run"])
    assert rc == 0, err
    assert "[resources] train: partition=default gpus=1 cpus=8 mem=16GB" in out


# ------------------------------------------------------------------ the command line


@pytest.mark.parametrize("argv", [["--logs", ""], ["--logs", "none"], ["--logs", "None"], ["--cpus", ""],
                                  ["--partition", ""]])
def test_an_empty_or_none_option_never_launches(argv: list[str], sweep_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`--logs "$RUN"` with RUN unset must not start the experiment: an empty value is a usage error,
    `none` is a run label (here: no run has it)."""
    rc, _, err = launch_in(tmp_path, monkeypatch, capsys, [str(good_sweep(sweep_dir)), "--executor", "debug", *argv])
    assert_refused(tmp_path, rc, err, f"{argv[0]}" if argv[1] else f"{argv[0]}: got ''", repr(argv[1]))


def test_options_are_never_abbreviated(sweep_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = good_sweep(sweep_dir)
    for prefix in (["--seed", "2"], ["--dry"], ["--exec", "debug"]):
        rc, _, err = launch_in(tmp_path, monkeypatch, capsys, [str(path), "--dry-run", *prefix])
        assert_refused(tmp_path, rc, err, f"unrecognized arguments: {' '.join(prefix)}")


def test_help_spells_options_with_dashes_and_the_underscore_spellings_still_parse(
        sweep_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        launch.main(["--help"])
    text = capsys.readouterr().out
    for name in ("dry-run", "retry-failed", "conditions-per-job", "array-parallelism", "driver-time"):
        assert f"--{name}" in text and f"--{name.replace('-', '_')}" not in text, name
    rc, out, err = launch_in(tmp_path, monkeypatch, capsys, [str(good_sweep(sweep_dir)), "--executor", "debug",
                                                             "--dry_run", "--retry_failed=false",
                                                             "--conditions_per_job", "2"])
    assert rc == 0 and "[eval]" in out, err


def test_the_tail_hint_of_detach_is_shell_quoted(sweep_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "it's a log" / "driver.log"
    monkeypatch.setattr(driver, "detach", lambda *a, **k: {"job_id": "42", "executor": "local", "log": str(log)})
    rc, out, err = launch_in(tmp_path, monkeypatch, capsys, [str(good_sweep(sweep_dir)), "--executor", "local",
                                                             "--detach"])
    assert rc == 0, err
    assert f"(or: tail -f {shlex.quote(str(log))})" in out, out
    assert shlex.split(out.split("tail -f ", 1)[1].split(")\n")[0]) == [str(log)]
