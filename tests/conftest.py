"""Shared pytest options: --runslow for end-to-end runs; SLURM tests need a live controller."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import torch


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow (CI does)")


def slurm_controller_up() -> bool:
    """True when `scontrol ping` reaches a controller (having `srun` on PATH is not enough)."""
    if shutil.which("scontrol") is None:
        return False
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "UP" in out.stdout


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="slow: run with --runslow"))


@pytest.fixture(autouse=True)
def _slurm_guard(request: pytest.FixtureRequest) -> None:
    """Tests marked `slurm` skip without a controller, or fail when CI said one must be up."""
    if request.node.get_closest_marker("slurm") is None:
        return
    if not slurm_controller_up():
        if os.environ.get("CROWDING_REQUIRE_SLURM") == "1":
            pytest.fail("CROWDING_REQUIRE_SLURM=1 but no SLURM controller answers `scontrol ping`")
        pytest.skip("no SLURM controller answers `scontrol ping`")


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    """In-process jobs set torch's thread count for the whole process: restore it after each test
    (bitwise comparisons with subprocesses depend on it)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
