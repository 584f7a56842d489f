"""The sbatch scripts the SLURM backend generates, pinned by golden files (as submitit pins its own):
a change of submitit (pinned to 1.5.x) or of our resources mapping shows up here, without a cluster.

To accept a deliberate change: delete the golden file and run the test once (it writes it), then
review the diff."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.backends import slurm
from cluster.resources import Resources
from sweeps import launch, smoke

GOLDEN = Path(__file__).parent / "golden"
COMMAND = "python -u -m submitit.core._submit /exp/smoke/logs/train"


def sbatch_text(folder: str, resources: Resources, env: dict[str, str], name: str) -> str:
    executor = slurm.SlurmBackend().executor(folder, resources, env=env, name=name)
    return executor._make_submission_file_text(COMMAND, "uid")  # what submitit writes and hands to sbatch


def check(name: str, text: str) -> None:
    path = GOLDEN / name
    if not path.exists():
        path.write_text(text)
        pytest.fail(f"wrote {path}: review it and run again")
    assert text == path.read_text(), f"sbatch text differs from {path} (delete it to accept the change)"


@pytest.fixture(autouse=True)
def no_cluster_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm, "slurm_available", lambda: True)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # thread counts come from the resources then
        monkeypatch.delenv(name, raising=False)


def test_a_training_stage_script() -> None:
    res = Resources(cpus=8, gpus=1, mem_gb=16, time_min=360, partition="gpu",
                    extra_sbatch=("qos=high", "constraint=a100|h100"))
    check("sbatch_train.txt", sbatch_text("/exp/smoke/logs/train", res, {"CROWDING_X": "a b"}, "smoke-train"))


def test_the_detached_driver_script() -> None:
    cfg = launch.LaunchConfig(detach=True, sbatch="qos=high")
    res = cfg.driver_resources(smoke.sweep().resources)
    check("sbatch_driver.txt", sbatch_text("/exp/smoke/logs/driver", res, {}, "smoke-driver"))
