"""A job's runtime: device, precision and threads, its environment (allocator, OpenMP), deferred signals.

All of it is process-wide and changes how a job runs, never what it computes (RunOptions,
ecc/config.py): only job bodies and entry points call the apply_* functions.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
import types
from typing import TYPE_CHECKING, Any

import torch

from core.cli import check_choice

from .config import DEVICES, PRECISIONS
from .environment import MALLOC_ENV

if TYPE_CHECKING:
    from .config import RunOptions

logger = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


# -------------------------------------------------------------------------------- device, precision, threads
def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; refuses cuda without a GPU."""
    check_choice("device", name, DEVICES)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch sees no GPU; use --device=cpu or auto")
    return torch.device(name)


def apply_precision(precision: str) -> None:
    """TF32 on or off for cuDNN convolutions and CUDA matmuls (process-wide). PyTorch lets cuDNN
    convolutions use TF32 by default on Ampere and later; fp32 (and bf16, whose autocast leaves
    some ops in float32) turn it off, tf32 turns it on. Harmless without a GPU."""
    check_choice("precision", precision, PRECISIONS)
    tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32


def apply_run_options(options: RunOptions) -> torch.device:
    """Device, precision and thread settings of a job (process-wide, so only job bodies call this)."""
    if options.threads:
        torch.set_num_threads(options.threads)
    apply_precision(options.precision)
    return resolve_device(options.device)


# -------------------------------------------------------------------------------- process environment
def apply_malloc_env() -> None:
    """MALLOC_ENV in this process, through mallopt (glibc), unless its environment already set it
    (the CLI's case: a process started by hand, not by the launcher)."""
    if all(os.environ.get(k) == v for k, v in MALLOC_ENV.items()):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        options = {"MALLOC_MMAP_MAX_": -4, "MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_TOP_PAD_": -2}
        for key, value in MALLOC_ENV.items():
            libc.mallopt(options[key], int(value))


# -------------------------------------------------------------------------------- signals
class DeferredSignals:
    """While active, SIGUSR2 and SIGTERM are only noted (`pending`); the training loop acts at the
    next step boundary (checkpoint first), then calls `forward()` to hand each noted signal, in the
    order they came, to whoever had it before: a Python handler (submitit's checkpoint-and-requeue)
    is called with (signum, None), SIG_DFL terminates the process by re-raising the signal, SIG_IGN
    lets training continue. Both signals are kept when both arrive within one step (a preemption
    sends SIGTERM, a time limit SIGUSR2): SIGTERM must not hide the SIGUSR2 that requeues the job.
    Only the main thread can install handlers; elsewhere this does nothing."""

    def __init__(self, signals: tuple[int, ...] = HANDLED_SIGNALS) -> None:
        self.signals = signals
        self._pending: list[int] = []  # distinct signals not yet forwarded, in arrival order
        self._previous: dict[int, Any] = {}

    @property
    def pending(self) -> int | None:
        """The first signal not yet forwarded, or None."""
        return self._pending[0] if self._pending else None

    def _note(self, signum: int, frame: types.FrameType | None) -> None:
        if signum not in self._pending:
            self._pending.append(signum)

    def __enter__(self) -> DeferredSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, prev in self._previous.items():
            signal.signal(s, signal.SIG_DFL if prev is None else prev)
        self._previous.clear()

    def forward(self) -> None:
        """Give each pending signal, in arrival order, to its previous handler (restored meanwhile)."""
        while self._pending:
            signum = self._pending.pop(0)
            prev = self._previous.get(signum, signal.SIG_DFL)
            name = signal.Signals(signum).name
            # None: a handler installed outside Python, which we cannot call; terminate as by default.
            signal.signal(signum, signal.SIG_DFL if prev is None else prev)
            if callable(prev):
                logger.info("%s: checkpoint written, calling the previous handler %r", name, prev)
                prev(signum, None)
            elif prev in (signal.SIG_DFL, None):
                logger.info("%s: checkpoint written, terminating", name)
                signal.raise_signal(signum)
            else:
                logger.info("%s: checkpoint written; the signal was ignored before, so training continues", name)
            signal.signal(signum, self._note)  # still running: keep deferring
