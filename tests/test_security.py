"""Security: no code from data (torch.load weights_only, no unpickling of outside files), the file
lock's fixed version, files with the user's umask, no network port, names that cannot escape.

The slow test runs the tiny sweep of tests/test_reliability.py on the local executor under umask
027, with an audit hook (sitecustomize on PYTHONPATH) in the launcher and in every job process, while
the test watches /proc for listening sockets of the whole process tree.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import subprocess
import sys
import threading
import tomllib
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import JOB_OPTIONS, PREEMPT_CFG, REPO, STEPS, TINY_FIELD, launcher, site_dir

from core.atomic import CorruptFileError, atomic_write_json, read_jsonl
from core.identity import file_digest
from core.layout import CHECKPOINT, RESULT
from core.runs import read_submission, record_submission
from ecc import datasets
from ecc.checkpoint import final_weights, load_checkpoint
from ecc.evaluate import main as evaluate_main
from ecc.train import main as train_main
from ecc.train import train

PROJECT_DIRS = ("ecc", "cluster", "sweeps", "results", "bench", "tests")


def project_files() -> list[Path]:
    files = [p for d in PROJECT_DIRS for p in (REPO / d).rglob("*.py")]
    assert len(files) > 20
    return files


def calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


# ------------------------------------------------------------------ no code from data
def test_every_torch_load_is_weights_only() -> None:
    """Static: each torch.load in the project passes weights_only=True (a literal, not a variable)."""
    found, bad = 0, []
    for path in project_files():
        text = path.read_text()
        lines = text.splitlines()
        tree = ast.parse(text, str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "torch" and any(a.name == "load" for a in node.names):
                bad.append(f"{path}:{node.lineno}: from torch import load (use torch.load(..., weights_only=True))")
        for node, name in calls(tree):
            if name == "torch.load":
                found += 1
                kw = {k.arg: k.value for k in node.keywords}
                if "deliberately unsafe" in lines[node.lineno - 1]:  # the test below that shows the danger
                    continue
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert found >= 1 and not bad, bad


UNPICKLERS = {"pickle.load", "pickle.loads", "pickle.Unpickler", "cloudpickle.load", "cloudpickle.loads",
              "dill.load", "dill.loads", "joblib.load", "pd.read_pickle", "pandas.read_pickle", "marshal.load",
              "marshal.loads", "shelve.open", "yaml.load", "yaml.unsafe_load"}


def test_project_code_unpickles_nothing() -> None:
    """Static: the project never unpickles (nor loads numpy object arrays). The only pickles read are
    submitit's own job files in the experiment's logs/<stage>/ (see docs/reliability.md)."""
    bad = []
    for path in project_files():
        tree = ast.parse(path.read_text(), str(path))
        for node, name in calls(tree):
            kw = {k.arg: k.value for k in node.keywords}
            allow = kw.get("allow_pickle")
            if name in UNPICKLERS or name.endswith(".read_pickle") or (
                    name in ("np.load", "numpy.load") and allow is not None
                    and not (isinstance(allow, ast.Constant) and allow.value is False)):
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert not bad, bad


class Payload:
    """Unpickling this would run code: it creates the file `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def evil_checkpoint(path: Path, marker: Path, **fields) -> None:
    """A checkpoint in the right format whose model entry is a pickled object, not tensors."""
    state = {"format": 1, "hash": PREEMPT_CFG.hash, "epoch": 0, "batch": 0, "step": 0,
             "sums": {"loss": 0.0, "correct": 0, "count": 0}, "metrics": [], "wall_time_s": 0.0,
             "train_time_s": 0.0, "epoch_time_s": 0.0, "images": 0, "optimizer": {}, "model": Payload(marker),
             **fields}
    torch.save(state, path)


def test_a_checkpoint_holding_a_pickled_object_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    evil_checkpoint(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)  # deliberately unsafe: the payload is live
    assert marker.exists()
    marker.unlink()

    with pytest.raises(CorruptFileError, match="cannot be read: UnpicklingError"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_training_sets_a_booby_trapped_checkpoint_aside_and_evaluation_refuses_it(tmp_path: Path) -> None:
    run, data = tmp_path / "run", tmp_path / "data"
    marker = tmp_path / "code-ran"
    run.mkdir()
    options = replace(JOB_OPTIONS, threads=0)
    train(PREEMPT_CFG, run, data_root=data, options=options)  # a finished, valid run
    good = final_weights(run)
    evil_checkpoint(run / CHECKPOINT, marker, epoch=PREEMPT_CFG.num_epochs)
    with pytest.raises(CorruptFileError, match="cannot be read"):
        final_weights(run)  # what evaluation loads
    (run / RESULT).unlink()  # so that train() starts again: it must not unpickle the trap either
    steps: list[int] = []
    train(PREEMPT_CFG, run, data_root=data, options=options, on_step=steps.append)
    assert steps == list(range(1, STEPS + 1))  # set aside, trained from scratch
    assert len(list(run.glob(f"{CHECKPOINT}.corrupt-*"))) == 1
    assert not marker.exists()
    for k, v in final_weights(run).items():
        assert torch.equal(v, good[k])
    assert len(read_jsonl(run / "metrics.jsonl")) == PREEMPT_CFG.num_epochs


def test_a_dataset_file_holding_pickled_objects_is_not_unpickled(tmp_path: Path) -> None:
    """Even with meta.json rewritten to match (write access to the cache), labels.npy holding a
    pickled object array is refused by np.load, not run."""
    spec = datasets.DatasetSpec(split="validation", stimulus=TINY_FIELD, random_shifts=True, limit=20,
                                validation_size=100)
    folder = datasets.ensure(spec, tmp_path, progress=False)
    marker = tmp_path / "code-ran"
    labels = np.empty(20, dtype=object)
    labels[0] = Payload(marker)
    np.save(folder / "labels.npy", labels, allow_pickle=True)
    meta = datasets.read_meta(folder)
    meta["files"]["labels.npy"] = {"bytes": (folder / "labels.npy").stat().st_size,
                                   "sha256": file_digest(folder / "labels.npy")}
    atomic_write_json(folder / "meta.json", meta)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        datasets.load(spec, tmp_path, progress=False)
    assert not marker.exists()


def test_submission_json_cannot_lead_out_of_the_logs_folder(tmp_path: Path) -> None:
    """A job id becomes part of submitit's file names (logs/<stage>/<id>_0_result.pkl, which is
    unpickled): one that is not a plain id is ignored, so the run is resubmitted instead."""
    for job_id in ("123", "123_4", "4242", "DEBUG_140618-pid7", "pid-42"):
        record_submission(tmp_path, executor="slurm", job_id=job_id, stage="train")
        assert read_submission(tmp_path)["job_id"] == job_id
    for job_id in ("../../../tmp/evil", "a/b", "..", "", "12 13", "-rf", "123\n"):
        record_submission(tmp_path, executor="slurm", job_id=job_id, stage="train")
        assert read_submission(tmp_path) is None, job_id


@pytest.mark.parametrize("main", [train_main, evaluate_main], ids=["train", "evaluate"])
@pytest.mark.parametrize("name", ["../../escaped", "a/b", ".."])
def test_cli_run_names_cannot_escape_their_folder(tmp_path: Path, capsys: pytest.CaptureFixture, main,
                                                  name: str) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--train_dir", str(tmp_path / "runs"), "--model_name", name])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"model_name {name!r} must be a plain folder name" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("*"))  # nothing written anywhere


# ------------------------------------------------------------------ dependencies
def test_filelock_is_at_least_3_20_1() -> None:
    """filelock < 3.20.1 follows symlinks planted at the lock path (TOCTOU, CVE-2025-68146)."""
    version = tuple(int(x) for x in importlib.metadata.version("filelock").split(".")[:3])
    assert version >= (3, 20, 1), version
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "filelock>=3.20.1" in [d.replace(" ", "") for d in deps], deps


# ------------------------------------------------------------------ a real run, watched
def _socket_inodes_of(mark: bytes) -> tuple[set[int], set[int]]:
    """(pids whose environment carries `mark`, inodes of the sockets they hold)."""
    pids, inodes = set(), set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if mark not in (proc / "environ").read_bytes():
                continue
            pids.add(int(proc.name))
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
        except OSError:  # gone meanwhile
            continue
    return pids, inodes


def _listening_inodes() -> dict[int, str]:
    """{inode: description} of TCP sockets in LISTEN and of every bound UDP socket."""
    out = {}
    for name in ("tcp", "tcp6", "udp", "udp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            f = line.split()
            if name.startswith("tcp") and f[3] != "0A":
                continue
            out[int(f[9])] = f"{name} {f[1]}"
    return out


def test_the_watchers_do_see_a_listening_socket(tmp_path: Path) -> None:
    """Control: a process that listens on a port is caught by both the /proc watcher and the audit hook."""
    mark = f"CROWDING_TEST_MARK={uuid.uuid4().hex}"
    audit = tmp_path / "audit.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site_dir(tmp_path / "site")), str(REPO)]),
           "CROWDING_TEST_AUDIT": str(audit), mark.split("=")[0]: mark.split("=")[1]}
    code = "import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); print('up', flush=True); " \
           "sys.stdin.read()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        pids, inodes = _socket_inodes_of(mark.encode())
        assert proc.pid in pids and any(i in _listening_inodes() for i in inodes)
    finally:
        proc.communicate("", timeout=30)
    assert any(" socket.bind " in line for line in audit.read_text().splitlines())


@pytest.fixture(scope="module")
def watched_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny sweep on the local executor under umask 027, audited, its process tree watched."""
    root = tmp_path_factory.mktemp("watched")
    mark = f"CROWDING_TEST_MARK={uuid.uuid4().hex}"
    audit = root / "audit.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site_dir(root / "site")), str(REPO)]),
           "CROWDING_TEST_AUDIT": str(audit), mark.split("=")[0]: mark.split("=")[1]}
    cmd = ["bash", "-c", 'umask 027 && exec "$@"', "bash",
           *launcher("tiny", "--executor", "local", "--out", str(root / "out"))]
    seen_pids: set[int] = set()
    listening: list[str] = []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            pids, inodes = _socket_inodes_of(mark.encode())
            seen_pids.update(pids)
            listen = _listening_inodes()
            listening.extend(listen[i] for i in inodes if i in listen)
            done.wait(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        output, _ = proc.communicate(timeout=300)
    finally:
        done.set()
        watcher.join()
        if proc.poll() is None:
            proc.kill()
    return {"rc": proc.returncode, "output": output, "exp": root / "out" / "tiny", "pids": seen_pids,
            "listening": listening, "audit": audit.read_text().splitlines() if audit.exists() else []}


@pytest.mark.slow
def test_files_are_created_with_the_users_umask(watched_run: dict) -> None:
    assert watched_run["rc"] == 0, watched_run["output"]
    exp: Path = watched_run["exp"]
    wrong = []
    for path in [exp, *exp.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        want = 0o750 if path.is_dir() else (0o750 if mode & 0o100 else 0o640)
        if mode != want:
            wrong.append(f"{oct(mode)} {path.relative_to(exp)}")
    assert not wrong, wrong
    kinds = {"result.json": "train/*/result.json", "checkpoint": "train/*/checkpoint.pt",
             "dataset": "datasets/*/images.npy", "figure": "figures/**/*.png", "table": "results.parquet",
             "lock": "launch.lock", "job pickle": "logs/*/*.pkl", "log": "logs/*/*.out"}
    assert all(list(exp.glob(pattern)) for pattern in kinds.values()), \
        {k: bool(list(exp.glob(p))) for k, p in kinds.items()}


@pytest.mark.slow
def test_nothing_listens_on_a_network_port(watched_run: dict) -> None:
    assert watched_run["rc"] == 0, watched_run["output"]
    assert len(watched_run["pids"]) >= 3, watched_run["pids"]  # the launcher and its jobs were watched
    assert watched_run["listening"] == []
    network = [line for line in watched_run["audit"] if " socket." in line]
    assert network == [], network  # not even a client socket (only asyncio's unnamed AF_UNIX pairs)


@pytest.mark.slow
def test_only_the_experiments_own_job_pickles_are_unpickled(watched_run: dict) -> None:
    assert watched_run["rc"] == 0, watched_run["output"]
    exp: Path = watched_run["exp"]
    reads = [line.split(" pickle-read ", 1)[1] for line in watched_run["audit"] if " pickle-read " in line]
    assert reads and all(Path(r).is_relative_to(exp / "logs") for r in reads), reads
    pickles = [p for p in exp.rglob("*") if p.is_file() and p.read_bytes()[:1] == b"\x80"]
    assert pickles and all(p.is_relative_to(exp / "logs") for p in pickles), pickles
