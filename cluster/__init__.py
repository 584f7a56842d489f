"""How jobs run: executors (auto|slurm|local|debug), job arrays, scheduler queries, run folders.

    resources.py   Resources (one per stage), what fits on this machine
    executors.py   make_executor(kind, folder, resources, env=...), the bounded local executor
    submission.py  submit_array / submit_runs (one array per stage, chunked), wait_runs
    scheduler.py   scheduler_states (one batched query), max_array_size, attach (re-attach by id)
                   (both also importable from submission)
    jobs.py        RunJob / CheckpointableRunJob / ChunkJob: what a job runs (run lock, errors, attempts)
    runs.py        run folders: result.json / error.json / submission.json -> RunState
"""

from .executors import KINDS, executor_kind, make_executor, resolve_kind, slurm_available
from .jobs import CheckpointableRunJob, ChunkJob, RunJob, RunResult, TooManyAttemptsError
from .resources import Resources
from .scheduler import attach, max_array_size, scheduler_states
from .submission import JobOutcome, submit_array, submit_runs, wait_job, wait_runs

__all__ = [
    "KINDS", "CheckpointableRunJob", "ChunkJob", "JobOutcome", "Resources", "RunJob", "RunResult",
    "TooManyAttemptsError", "attach", "executor_kind", "make_executor", "max_array_size", "resolve_kind",
    "scheduler_states", "slurm_available", "submit_array", "submit_runs", "wait_job", "wait_runs",
]
