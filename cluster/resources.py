"""What a job asks for (`Resources`, one per stage) and how many such jobs fit on this machine."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.cli import arg

logger = logging.getLogger(__name__)

# sbatch options that a dedicated field (or submitit itself) already sets: extras must not fight them.
_RESERVED = {
    "partition": "partition", "p": "partition",
    "gpus-per-node": "gpus", "gpus": "gpus", "G": "gpus",
    "cpus-per-task": "cpus", "c": "cpus",
    "mem": "mem_gb",
    "time": "time_min", "t": "time_min",
    "array": "array_parallelism", "a": "array_parallelism",
    "signal": "signal_delay_s",
    "output": "submitit (log paths)", "o": "submitit (log paths)",
    "error": "submitit (log paths)", "e": "submitit (log paths)",
    "open-mode": "submitit (log paths)",
    "job-name": "Backend.executor(name=...)", "J": "Backend.executor(name=...)",
}
_OPTION_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def split_sbatch(text: str) -> tuple[str, ...]:
    """Extra sbatch options as typed on a command line, split by shell rules (the one place that
    does): "qos=high constraint='a100|h100'" -> ("qos=high", "constraint=a100|h100")."""
    try:
        return tuple(shlex.split(text))
    except ValueError as e:  # an unbalanced quote
        raise ValueError(f"extra sbatch options {text!r} cannot be split ({e}); e.g. qos=high constraint='a|b'") from None


def _sbatch_key(key: str) -> str:
    key = key.strip().lstrip("-")
    return key if len(key) == 1 else key.replace("_", "-")


@dataclass(frozen=True)
class Resources:
    """What one job of a stage asks for; the same values bound the local executor."""

    partition: str | None = arg(None, "SLURM partition (None = the cluster's default)")
    gpus: int = arg(0, "GPUs per job")
    cpus: int = arg(1, "CPU cores per task (a job's torch/OpenMP threads default to this)")
    mem_gb: float | None = arg(None, "memory per job in GB (None = the cluster's default per CPU)")
    time_min: int = arg(60, "time limit per job in minutes (enforced by the local executor too)")
    array_parallelism: int = arg(256, "most jobs of one stage running at once (SLURM array %%N; "
                                      "also caps the local executor)")
    signal_delay_s: int | None = arg(None, "seconds before the time limit at which a job gets SIGUSR2 "
                                           "to checkpoint and requeue (None = a fifth of the limit, "
                                           "at most 120)")
    extra_sbatch: tuple[str, ...] = arg((), "extra sbatch options as key=value (or a bare flag), "
                                             "e.g. qos=high constraint=a100")

    def __post_init__(self) -> None:
        if isinstance(self.extra_sbatch, str):  # from a command line: "qos=high constraint='a|b'"
            object.__setattr__(self, "extra_sbatch", split_sbatch(self.extra_sbatch))
        if not isinstance(self.extra_sbatch, tuple):
            object.__setattr__(self, "extra_sbatch", tuple(self.extra_sbatch))
        if self.partition is not None and (not isinstance(self.partition, str) or not self.partition.strip()
                                           or any(c.isspace() for c in self.partition)):
            raise ValueError(f"partition {self.partition!r} must be a partition name without spaces, "
                             "or None for the cluster's default")
        for name, low in (("gpus", 0), ("cpus", 1), ("time_min", 1), ("array_parallelism", 1),
                          ("signal_delay_s", 0)):
            value = getattr(self, name)
            if name == "signal_delay_s" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} {value!r} must be an integer >= {low}")
        if self.mem_gb is not None and (isinstance(self.mem_gb, bool)
                                        or not isinstance(self.mem_gb, (int, float)) or not 0 < self.mem_gb < math.inf):
            raise ValueError(f"mem_gb {self.mem_gb!r} must be a positive finite number of GB, or None for the "
                             "cluster's default")
        if self.signal_delay_s is not None and self.signal_delay_s >= 60 * self.time_min:
            raise ValueError(f"signal_delay_s {self.signal_delay_s} must be shorter than the time limit "
                             f"({self.time_min} min = {60 * self.time_min} s); e.g. signal_delay_s="
                             f"{min(120, 60 * self.time_min // 5)}, or None for that")
        self.sbatch_options()  # validates the extras

    @property
    def signal_delay(self) -> int:
        """Seconds before the time limit at which the job is asked to checkpoint (SIGUSR2)."""
        if self.signal_delay_s is not None:
            return self.signal_delay_s
        return min(120, 60 * self.time_min // 5)

    def summary(self) -> str:
        """One line for logs: `partition=default gpus=0 cpus=1 mem=defaultGB time=60min array_parallelism=256`."""
        parts = [f"partition={self.partition or 'default'}", f"gpus={self.gpus}", f"cpus={self.cpus}",
                 f"mem={self.mem_gb if self.mem_gb is not None else 'default'}GB", f"time={self.time_min}min",
                 f"array_parallelism={self.array_parallelism}"]
        if self.extra_sbatch:
            parts.append("extra=" + " ".join(self.extra_sbatch))
        return " ".join(parts)

    def sbatch_options(self) -> dict[str, Any]:
        """The extras as submitit's `additional_parameters` ({"qos": "high", "exclusive": True})."""
        out: dict[str, Any] = {}
        for item in self.extra_sbatch:
            if not isinstance(item, str):
                raise ValueError(f"extra_sbatch item {item!r} must be a string like 'qos=high'")
            key, sep, value = item.partition("=")
            key = _sbatch_key(key)
            if not _OPTION_KEY.match(key) or (sep and not value):
                raise ValueError(f"extra_sbatch item {item!r} must look like key=value (e.g. qos=high, "
                                 "constraint=a100) or be a bare flag (e.g. exclusive)")
            if key in _RESERVED:
                raise ValueError(f"extra_sbatch item {item!r} sets {key!r}, which {_RESERVED[key]} "
                                 f"sets; use that instead. Valid Resources fields: "
                                 f"{', '.join(f.name for f in dataclasses.fields(self))}")
            if key in out:
                raise ValueError(f"extra_sbatch sets {key!r} twice: {self.extra_sbatch}")
            out[key] = value if sep else True
        return out


# ----------------------------------------------------------------- this machine


@dataclass(frozen=True)
class LocalCapacity:
    """What this machine (or this process's cgroup) offers to local jobs."""

    cpus: int
    mem_gb: float | None           # None when unknown
    gpus: tuple[int, ...]          # device ids that local jobs may be given (CUDA_VISIBLE_DEVICES)


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _cgroup_cpus() -> float | None:
    quota = _read("/sys/fs/cgroup/cpu.max").split()  # cgroup v2: "max 100000" or "200000 100000"
    if len(quota) == 2 and quota[0] != "max":
        return int(quota[0]) / int(quota[1])
    q, p = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if q and p and int(q) > 0:
        return int(q) / int(p)
    return None


def _memory_gb() -> float | None:
    limits = [_read("/sys/fs/cgroup/memory.max"), _read("/sys/fs/cgroup/memory/memory.limit_in_bytes")]
    cgroup = [int(v) / 2**30 for v in limits if v.isdigit() and int(v) < 2**60]
    avail = None
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemAvailable:"):
            avail = int(line.split()[1]) / 2**20
    known = [v for v in [*cgroup, avail] if v is not None]
    return min(known) if known else None


def _gpus() -> tuple[int, ...]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if all(v.isdigit() for v in ids):
            return tuple(int(v) for v in ids)
        logger.warning("CUDA_VISIBLE_DEVICES=%s is not a list of indices; local jobs will share GPUs", visible)
        return tuple(range(len(ids)))
    try:
        return tuple(range(len(os.listdir("/proc/driver/nvidia/gpus"))))
    except OSError:
        return ()


def local_capacity() -> LocalCapacity:
    cpus = len(os.sched_getaffinity(0))
    quota = _cgroup_cpus()
    if quota is not None:
        cpus = min(cpus, max(1, int(quota)))
    return LocalCapacity(cpus=cpus, mem_gb=_memory_gb(), gpus=_gpus())


def local_slots(resources: Resources, capacity: LocalCapacity | None = None) -> int:
    """How many jobs asking for `resources` may run at once here (at least 1)."""
    cap = local_capacity() if capacity is None else capacity
    limits = {"cpus": cap.cpus // resources.cpus, "array_parallelism": resources.array_parallelism}
    if resources.mem_gb is not None and cap.mem_gb is not None:
        limits["mem_gb"] = int(cap.mem_gb // resources.mem_gb)
    if resources.gpus and cap.gpus:
        limits["gpus"] = len(cap.gpus) // resources.gpus
    slots = max(1, min(limits.values()))
    logger.debug("local slots: %d (limits %s)", slots, limits)
    return slots


def fit_capacity(resources: Resources, capacity: LocalCapacity) -> Resources:
    """`resources` with no more cores, GPUs or memory than `capacity` offers (an unknown amount of
    memory keeps the request)."""
    mem = resources.mem_gb
    if mem is not None and capacity.mem_gb is not None and capacity.mem_gb > 0:
        mem = min(mem, max(0.1, math.floor(10 * capacity.mem_gb) / 10))  # 5.8 GB, not 5.83984375
    return dataclasses.replace(resources, cpus=min(resources.cpus, capacity.cpus),
                               gpus=min(resources.gpus, len(capacity.gpus)), mem_gb=mem)
