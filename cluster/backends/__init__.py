"""The registry of scheduler backends (slurm, local, debug) and how `auto` picks one.

A new scheduler: a module beside these with a `Backend` subclass (cluster/backends/base.py), and
one line in BACKENDS."""

from __future__ import annotations

from typing import Any

from .base import Backend
from .debug import DebugBackend
from .local import LocalBackend
from .slurm import SlurmBackend

# In the order `auto` tries them (debug is never picked: it runs jobs inside the launcher).
BACKENDS: dict[str, type[Backend]] = {
    "slurm": SlurmBackend,
    "local": LocalBackend,
    "debug": DebugBackend,
}
AUTO = ("slurm", "local")
KINDS = ("auto", *BACKENDS)


def resolve_kind(kind: str) -> str:
    """`auto` -> the first of AUTO that is available (slurm when a controller answers, else local);
    other names are checked and returned."""
    if kind not in KINDS:
        raise ValueError(f"executor {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "auto":
        return next((k for k in AUTO if BACKENDS[k].available()), AUTO[-1])
    return kind


def get_backend(kind: str, **options: Any) -> Backend:
    """The backend of an executor kind (`auto` resolved); `options` go to its constructor (e.g.
    LocalBackend(max_jobs=...), SlurmBackend(max_array_size=...))."""
    return BACKENDS[resolve_kind(kind)](**options)
