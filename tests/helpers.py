"""Small helpers shared by several test files."""

from __future__ import annotations

import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch


def wait_until(predicate: Callable[[], Any], timeout_s: float = 60, what: str = "") -> Any:
    """The first truthy value of `predicate()`, polled every 0.2 s (tests only: watching real
    processes and the real scheduler from outside)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Bitwise equal state dicts."""
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def run_notebook(nb: Any, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timeout_s: int = 120) -> None:
    """Execute a notebook (nbclient) in `folder` on a kernel reached over Unix sockets in tmp_path
    (no network port opened), its connection file and Jupyter runtime folder in tmp_path too, and
    assert that no connection file is left behind: it holds the kernel's key (before, every run
    left one in /tmp)."""
    import nbclient
    from jupyter_client import KernelManager

    runtime = tmp_path / "jupyter-runtime"
    runtime.mkdir(exist_ok=True)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))  # the kernel's own files, if it writes any
    km = KernelManager(kernel_name="python3", transport="ipc", ip=str(tmp_path / "kernel"),
                       connection_file=str(runtime / "kernel-notebook.json"))
    try:
        nbclient.NotebookClient(nb, km=km, timeout=timeout_s, resources={"metadata": {"path": str(folder)}}).execute()
    finally:
        km.cleanup_resources()
    key = km.session.key.decode()
    left = [p for d in (Path(tempfile.gettempdir()), runtime) for p in d.glob("*.json") if key in _text(p)]
    assert not left, f"connection files left behind: {left}"


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:  # another user's file, or gone meanwhile
        return ""


SITECUSTOMIZE = textwrap.dedent("""
    # Injected by the reliability/security tests (PYTHONPATH), in the launcher and in every job process.
    import os, sys, time

    def _job_stage():
        # A submitit job process runs `python -u -m submitit.core._submit <exp>/logs/<stage>`.
        try:
            argv = [a.decode() for a in open("/proc/self/cmdline", "rb").read().split(b"\\0") if a]
        except OSError:
            return None
        return os.path.basename(argv[-1]) if "submitit.core._submit" in argv else None

    _gates = os.environ.get("CROWDING_TEST_GATES")
    if _gates:  # hold each job of a stage at its start while the file <gates>/<stage> exists
        _stage = _job_stage()
        _deadline = time.time() + 600
        while _stage and os.path.exists(os.path.join(_gates, _stage)) and time.time() < _deadline:
            time.sleep(0.05)

    _audit = os.environ.get("CROWDING_TEST_AUDIT")
    if _audit:  # record network sockets and pickle reads, for tests/test_security.py
        _busy = []

        def _hook(event, args):
            if _busy:
                return
            if event in ("socket.bind", "socket.connect", "socket.sendto", "socket.getaddrinfo") or (
                    event == "socket.__new__" and args[1] != 1):  # 1: AF_UNIX (asyncio's self-pipe)
                line = f"{os.getpid()} {event} {args[1:]!r}"
            elif event == "open" and isinstance(args[0], str) and args[0].endswith((".pkl", ".pickle")) \\
                    and (args[1] is None or "r" in args[1]):
                line = f"{os.getpid()} pickle-read {args[0]}"
            else:
                return
            _busy.append(1)
            try:
                with open(_audit, "a") as f:
                    f.write(line + "\\n")
            finally:
                _busy.pop()

        sys.addaudithook(_hook)
""")


def site_dir(folder: Path) -> Path:
    """A folder with the tests' sitecustomize.py, to put first on PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder
