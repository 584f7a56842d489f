"""A training or evaluation job's environment variables (glibc's allocator, OpenMP), without torch:
the launcher sets them when it starts a job (ecc.runtime applies them in a process started by hand)."""

from __future__ import annotations

# Environment for training and evaluation processes. glibc and OpenMP read it at start-up, so the
# launcher sets it (a running process cannot). Measured with bench/train.py (2 cores, batch 128):
# - MALLOC_ENV: glibc keeps freed memory for reuse instead of mmap-ing every large activation
#   afresh (page faults, zeroing) and trimming it back: a training step 1.46 s -> 1.13 s.
# - SHARED_CPU_ENV, for machines whose cores are shared (several jobs per node, other users):
#   OpenMP threads spinning at barriers starve the thread they wait for; with 2 other busy
#   processes a step took 9.0 s by default and 2.2 s with it; on idle cores it costs ~5%.
MALLOC_ENV = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": "100000000000",
    "MALLOC_TOP_PAD_": "1073741824",
}
SHARED_CPU_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def job_env(shared_cpus: bool = False) -> dict[str, str]:
    """Variables to add to a training or evaluation job's environment (see MALLOC_ENV)."""
    return {**MALLOC_ENV, **(SHARED_CPU_ENV if shared_cpus else {})}
