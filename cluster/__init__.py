"""How jobs run: scheduler backends, one submission path, job bodies, what a job asks for.

    backends/      one module per executor kind (slurm.py, local.py, debug.py) behind the `Backend`
                   interface (base.py); the registry and `auto` (__init__.py)
    submission.py  Submission: a stage's jobs submitted as one array, re-attached, waited for;
                   scheduler_states of run folders (one batched query per backend)
    jobs.py        RunJob / CheckpointableRunJob / ChunkJob: what a job runs (run lock, errors, attempts)
    resources.py   Resources (one per stage), what fits on this machine
"""
