"""Processes of this machine known by pid AND start time: pids are reused (pid_max is often 32768, and
they wrap within the hour on a busy machine), so a pid alone can name another program's process.

A process is identified by its pid, its start time (field 22 of /proc/PID/stat, in clock ticks since
boot: two processes never share both), and what its command line must contain."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Iterator
from pathlib import Path


def start_time(pid: int | str) -> str:
    """The process's start time (clock ticks since boot) as text; "" when there is no such process."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return ""
    # The command name (field 2) is in parentheses and may hold spaces or ')': split after the last one.
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def cmdline(pid: int | str) -> str:
    """The process's command line, arguments joined by spaces ("" when gone, or a zombie)."""
    try:
        raw = Path(f"/proc/{int(pid)}/cmdline").read_bytes()
    except (OSError, ValueError):
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def alive(pid: int | str, *, token: str = "", contains: tuple[str, ...] = ()) -> bool:
    """True when `pid` is a live process (not a zombie) whose start time is `token` (when given) and
    whose command line contains every string of `contains`."""
    line = cmdline(pid)
    if not line or not all(part in line for part in contains):
        return False
    return not token or start_time(pid) == str(token)


def children(pid: int | str) -> list[int]:
    """The direct children of a process (empty when it is gone)."""
    try:
        return [int(c) for c in Path(f"/proc/{int(pid)}/task/{int(pid)}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def parent(pid: int | str) -> int:
    """The parent's pid (0 when the process is gone)."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return 0
    fields = stat.rpartition(")")[2].split()
    return int(fields[1]) if len(fields) > 1 else 0


def pids() -> Iterator[int]:
    """Every pid of this machine (as far as /proc shows), this process left out."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me:
            yield int(entry.name)


def stop_process(pid: int, token: str, wait_s: float, first: signal.Signals = signal.SIGINT) -> bool:
    """Stop a process of this machine (pid and start time): `first`, SIGTERM after 10 s, SIGKILL after
    20 s; waits (pidfd) until it is gone, at most `wait_s`. True when it is gone."""
    if not alive(pid, token=token):
        return True
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        deadline = time.monotonic() + wait_s
        for sig, after in ((first, 10.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, wait_s)):
            if not alive(pid, token=token):
                return True
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, sig)
            if select.select([fd], [], [], max(0.0, min(after, deadline - time.monotonic())))[0]:
                return True
            if time.monotonic() >= deadline:
                break
        return not alive(pid, token=token)
    finally:
        os.close(fd)
