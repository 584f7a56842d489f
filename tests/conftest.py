"""Shared pytest options (--runslow for end-to-end runs; SLURM tests need a live controller) and the
fixtures several test files use: spies on the pipeline, and the smoke experiment run once per session."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch

from cluster.backends.slurm import slurm_available

if TYPE_CHECKING:
    from helpers import Launch, Submitted


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow (CI does)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skips are decided here, at collection, so that no fixture of a skipped test ever runs (a
    module-scoped fixture that launches on SLURM would otherwise fail before a test-level guard)."""
    runslow = config.getoption("--runslow")
    wanted = [item for item in items if runslow or "slow" not in item.keywords]
    for item in items:
        # With pytest-xdist (`-n 2 --dist loadgroup`, as CI runs), the tests on the one-node SLURM
        # cluster run one after another on one worker (they share its queue and its CPUs); the
        # other worker runs the rest meanwhile.
        if "slurm" in item.keywords:
            item.add_marker(pytest.mark.xdist_group("slurm"))
    for item in items:
        if item not in wanted:
            item.add_marker(pytest.mark.skip(reason="slow: run with --runslow"))
    if not any("slurm" in item.keywords for item in wanted):
        return
    if slurm_available():
        return
    if os.environ.get("CROWDING_REQUIRE_SLURM") == "1":  # CI started a cluster: its tests must run
        raise pytest.UsageError("CROWDING_REQUIRE_SLURM=1 but no SLURM controller answers `scontrol ping`")
    for item in wanted:
        if "slurm" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="no SLURM controller answers `scontrol ping`"))


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    """In-process jobs set torch's thread count for the whole process: restore it after each test
    (bitwise comparisons with subprocesses depend on it)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ spies on the pipeline
@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch) -> Submitted:
    """A spy on Submission.submit (the one way the pipeline submits)."""
    from helpers import Submitted

    from cluster.submission import Submission

    spy = Submitted([])
    real = Submission.submit

    def submit(self: Submission, jobs: Any, **kwargs: Any) -> Any:
        spy.arrays.append((self.stage, type(self.backend).__name__, [call for call, _ in jobs]))
        return real(self, jobs, **kwargs)

    monkeypatch.setattr(Submission, "submit", submit)
    return spy


@pytest.fixture
def no_figures(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Skip drawing (seconds per launch); the end-to-end tests draw them for real."""
    from results import plots

    calls: list[Path] = []

    def draw_all(exp_dir: Any, *args: Any, **kwargs: Any) -> list[Path]:
        calls.append(Path(exp_dir))
        return []

    monkeypatch.setattr(plots, "draw_all", draw_all)
    return calls


# ------------------------------------------------------------------ the smoke experiment, run once
@pytest.fixture(scope="session")
def smoke_experiment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Launch]]:
    """`python -m sweeps.launch smoke --executor debug --out OUT`, run once per session (once per
    pytest-xdist worker), in-process, figures included: OUT/smoke and what the launch printed.
    Tests only read it; one that changes it takes a private copy (`smoke_copy`)."""
    from helpers import Launch

    from sweeps import launch

    out = tmp_path_factory.mktemp("smoke-out")
    threads = torch.get_num_threads()  # in-process jobs set it: the tests after this one must not inherit it
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = launch.main(["smoke", "--executor", "debug", "--out", str(out)])
    torch.set_num_threads(threads)
    yield out / "smoke", Launch(rc, printed.getvalue().splitlines())


@pytest.fixture
def smoke_copy(smoke_experiment: tuple[Path, Launch], tmp_path: Path) -> Path:
    """A private copy of the finished smoke experiment, at <tmp>/smoke (where `--out <tmp>` puts it)."""
    exp = tmp_path / "smoke"
    shutil.copytree(smoke_experiment[0], exp, ignore=shutil.ignore_patterns("*.lock"))
    return exp
