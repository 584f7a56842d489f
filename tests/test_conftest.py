"""The README's promise: without a SLURM controller, tests marked `slurm` skip before any of their
fixtures run (at collection), and CI (CROWDING_REQUIRE_SLURM=1) refuses to skip them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CONFTEST = Path(__file__).with_name("conftest.py")

TEST_FILE = '''
import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def launched():
    raise RuntimeError("executor 'slurm' was asked for, but no SLURM controller answers")


def test_uses_the_cluster(launched):
    assert launched
'''

# What `scontrol ping` prints when SLURM is installed but its controller is not running.
DOWN_SCONTROL = '#!/bin/sh\necho "Slurmctld(primary) at localhost is DOWN"\nexit 1\n'


def run_pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(DOWN_SCONTROL)
    scontrol.chmod(0o755)
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_cluster.py").write_text(TEST_FILE)
    environ = {k: v for k, v in os.environ.items() if k != "CROWDING_REQUIRE_SLURM"}
    environ.update(PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHONPATH=os.pathsep.join(sys.path), **env)
    return subprocess.run([sys.executable, "-m", "pytest", "--runslow", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, env=environ, timeout=120)


def test_slurm_tests_skip_before_their_module_fixtures_without_a_controller(tmp_path: Path) -> None:
    out = run_pytest(tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 skipped" in out.stdout and "error" not in out.stdout.lower(), out.stdout


def test_ci_refuses_to_skip_slurm_tests(tmp_path: Path) -> None:
    out = run_pytest(tmp_path, CROWDING_REQUIRE_SLURM="1")
    assert out.returncode != 0
    assert "CROWDING_REQUIRE_SLURM=1 but no SLURM controller" in out.stdout + out.stderr
