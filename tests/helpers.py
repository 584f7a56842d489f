"""Small helpers shared by several test files."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

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
