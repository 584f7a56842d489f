"""The cluster workflow on the real SLURM cluster: --detach returns at once and the sweep completes
(--status during it), a second launch refuses while the driver runs, the driver killed mid-train and
a relaunch that reruns nothing done, --cancel while the relaunched driver is held just before it
submits (it submits nothing, squeue ends empty) and a relaunch that completes, and the README's own
sweep file, kept outside the package.

The one-node test cluster has 2 CPUs and a driver takes one, so these runs use the smoke sweep with
few eval jobs (--conditions-per-job 12)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import wait_until

from sweeps import control
from sweeps.pipeline import PAUSE_ENV

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
FEW = ("--executor", "slurm", "--conditions-per-job", "12")
# The relaunched driver's evaluation one job of 2 conditions at a time, so that --cancel finds work
# running (with 12 per job, two at once, it could finish the sweep before --cancel got there).
SLOW_EVAL = ("--executor", "slurm", "--conditions-per-job", "2", "--array-parallelism", "1")
DONE = ["datasets    2 jobs: 2 done", "train       4 jobs: 4 done", "eval       24 jobs: 24 done"]


def launcher(*args: str, cwd: Path, timeout: float = 400,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "sweeps.launch", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def squeue(name_prefix: str) -> list[str]:
    """`JOBID NAME STATE` of the jobs squeue lists whose name starts with the prefix."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.split()[1].startswith(name_prefix)]


def status(out: Path) -> list[str]:
    proc = launcher("smoke", "--status", "--out", str(out), cwd=out)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def driver_line(lines: list[str]) -> str:
    (line,) = [line for line in lines if line.startswith("driver ")]
    return line


def submissions(exp: Path, stage: str) -> dict[Path, str]:
    folder = exp / ("datasets/jobs" if stage == "datasets" else stage)
    return {p: p.read_text() for p in folder.glob("*/submission.json")}


def readme_cluster_commands(out: Path) -> dict[str, list[str]]:
    """The README's detach/status/logs/cancel commands, as written (only their --out made this test's)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```\n(.*?)```", text[text.index("## On a cluster: detach, follow, cancel"):], re.S).group(1)
    commands = {}
    for line in block.splitlines():
        argv = line.split("#")[0].split()
        assert argv[:3] == ["python", "-m", "sweeps.launch"], line
        commands[argv[4]] = [a.replace("/tmp/exps", str(out)) for a in argv[3:]]
    assert list(commands) == ["--detach", "--status", "--logs", "--cancel"]
    return commands


def detach(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[str, float]:
    t0 = time.time()
    proc = launcher(*argv, cwd=cwd, env=env)
    seconds = time.time() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    match = re.match(r"detached: driver job (\d+) \(slurm\) runs smoke in ", proc.stdout)
    assert match, proc.stdout
    assert "--cancel" in proc.stdout and "--status" in proc.stdout and "--logs driver" in proc.stdout
    return match.group(1), seconds


def test_detach_status_logs_a_killed_driver_cancel_and_relaunches(tmp_path: Path) -> None:
    """One experiment through the whole workflow, with the README's commands as written."""
    readme = readme_cluster_commands(tmp_path)
    exp = tmp_path / "smoke"

    # --detach returns at once (python start-up and one sbatch): the sweep runs in the driver job. It is
    # held before its evaluations (fault injection, never released): on a loaded machine the checks
    # below can outlast the 4 trainings, and an eval array submitted before the kill would finish
    # the experiment before the relaunch this test is about
    first_held = tmp_path / "first-held"
    first_held.mkdir()
    job, seconds = detach(readme["--detach"], tmp_path, env={PAUSE_ENV: f"eval:{first_held}"})
    print(f"--detach returned in {seconds:.1f} s")
    assert seconds < 60, seconds
    assert json.loads((exp / "driver.json").read_text())["job_id"] == job
    assert [line.split()[1] for line in squeue("smoke-driver")] == ["smoke-driver"]

    # while it runs: --status names the driver, --logs driver shows its log, a second launch exits 3
    wait_until(lambda: submissions(exp, "train"), 300, "training to be submitted")
    lines = launcher(*readme["--status"], cwd=tmp_path).stdout.splitlines()
    assert lines[0] == "datasets    2 jobs: 2 done" and f"driver   job {job} (slurm): RUNNING" in driver_line(lines)
    logs = launcher(*readme["--logs"], cwd=tmp_path)
    assert logs.returncode == 0 and f"==> {exp}/logs/driver/{job}_0_log.out" in logs.stdout, logs.stdout + logs.stderr
    assert "[train] submitting 4 job(s)" in logs.stdout
    busy = launcher("smoke", *FEW, "--out", str(tmp_path), cwd=tmp_path)
    assert busy.returncode == 3, busy.stdout + busy.stderr
    assert f"SLURM job {job}" in busy.stderr or f"driver, job {job}" in busy.stderr, busy.stderr

    # the driver killed mid-train or held before its evaluations (scancel of the driver alone): its
    # training array goes on, and no evaluation was submitted
    assert submissions(exp, "eval") == {}
    datasets_done = submissions(exp, "datasets")
    train_submitted = submissions(exp, "train")
    subprocess.run(["scancel", job], check=True)
    wait_until(lambda: not squeue("smoke-driver"), 60, "the driver to be gone")
    assert re.search(r"CANCELLED|FAILED", driver_line(status(tmp_path)))

    # relaunched detached, it re-attaches to the training array and reruns nothing done; it is held
    # just before it submits the evaluations (fault injection), where a --cancel used to race it
    held = tmp_path / "held"
    held.mkdir()
    job2, _ = detach([*readme["--detach"], *SLOW_EVAL], tmp_path, env={PAUSE_ENV: f"eval:{held}"})
    assert job2 != job
    log = exp / "logs" / "driver" / f"{job2}_0_log.out"
    wait_until(lambda: log.is_file() and "[train] 4 jobs: " in log.read_text(), 300, "the second driver's train stage")
    text = log.read_text()
    assert "[datasets] 2 jobs: 2 done, 0 to submit" in text
    assert re.search(r"\[train\] 4 jobs: \d+ done, \d+ still running from an earlier launch, 0 to submit", text) \
        or "[train] 4 jobs: 4 done, 0 to submit" in text, text
    assert submissions(exp, "datasets") == datasets_done
    assert submissions(exp, "train") == train_submitted  # waited for, not resubmitted

    # --cancel while the driver is about to submit: the driver is released the moment the experiment
    # is marked cancelled (before its job is scancel'ed): it submits nothing, and squeue ends empty
    wait_until(lambda: (held / "held").exists(), 900, "the second driver to reach the eval stage")
    cancelling = subprocess.Popen([sys.executable, "-m", "sweeps.launch", *readme["--cancel"]], cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
    wait_until(lambda: (exp / "cancel.json").is_file(), 120, "the cancel mark")
    (held / "go").touch()
    out, err = cancelling.communicate(timeout=400)
    assert cancelling.returncode == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith(f"cancelled the driver: job {job2} (slurm, was "), lines
    assert lines[-1] == "no queued or running stage job to cancel", lines
    assert squeue("smoke-") == []
    assert submissions(exp, "eval") == {}  # nothing was submitted after the mark
    after = status(tmp_path)
    assert after[:2] == DONE[:2] and re.search(r"CANCELLED|COMPLETED", driver_line(after)), after
    assert after[2] == "eval       24 jobs: 24 missing", after
    driver_log = log.read_text()
    assert "[eval] submitting" not in driver_log, driver_log
    done = {p: text for p, text in {**submissions(exp, "train"), **submissions(exp, "eval")}.items()
            if (p.parent / "result.json").is_file()}

    # a relaunch in the foreground completes, resubmitting only what was cancelled
    again = launcher("smoke", *FEW, "--out", str(tmp_path), cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[eval] 24 jobs: 24 done" in again.stdout.splitlines()
    assert {p: p.read_text() for p in done} == done
    assert submissions(exp, "datasets") == datasets_done
    assert status(tmp_path)[:3] == DONE
    for run in (exp / "train").iterdir():  # jobs of a driver (no terminal) log their progress all the same
        text = control.log_files(exp, run)[0].read_text()
        assert "epoch 2/2 step 16: train/loss" in text and " img/s)" in text, text


def test_the_readme_sweep_file_outside_the_package_on_slurm(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text[text.index("## Writing a sweep"):], re.S).group(1)
    (tmp_path / "my_sweep.py").write_text(code)
    proc = launcher("my_sweep.py", "--quick", *FEW, "--gpus", "0", "--cpus", "1", "--mem", "1", "--out", "exps",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[eval] 24 jobs: 24 done" in proc.stdout.splitlines()
    assert (tmp_path / "exps" / "my-pooling-quick" / "results.csv").is_file()
    assert not control.active_jobs(tmp_path / "exps" / "my-pooling-quick")
