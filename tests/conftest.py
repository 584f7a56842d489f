"""Shared pytest options: --runslow for end-to-end runs; SLURM tests need a live controller."""

from __future__ import annotations

import os

import pytest
import torch

from cluster.backends.slurm import slurm_available


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
