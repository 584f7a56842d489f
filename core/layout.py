"""The layout of an experiment folder and of its run folders: every file and folder name, in one place.

    <experiment>/
      spec.json            the sweep as launched (sweeps.pipeline)
      plan.json            every planned training and evaluation (core.plan.Plan)
      selection.json       what the select stage chose (core.plan.Selection)
      launch.lock          held by the launcher running the experiment; launch.json names it
      driver.json          the detached driver (sweeps.driver)
      cancel.json          the --cancel mark, under submit.lock (core.cancel)
      results.* selection.csv summary.* findings.* bouma.csv   the tables and report (results/)
      figures/             the figures (results.plots)
      logs/<stage>/        the scheduler's logs of each stage's jobs (logs/driver: the detached driver)
      datasets/<key>/      the built datasets (ecc.datasets owns what is inside)
      datasets/jobs/<key>/ the run folder of the job that builds one
      train/<hash>/        a training run folder
      eval/<hash>/         an evaluation run folder

    <run folder>/
      config.json  submission.json  result.json  error.json   what state the job is in (core.runs)
      run.lock  attempts.json                                  one copy at a time, attempts (cluster.jobs)
      metrics.jsonl  progress.json  checkpoint.pt              a training (ecc.train, ecc.checkpoint)
      correct.npy                                              an evaluation's per-image record (core.hits)

Only names live here; what a file holds belongs to the module named beside it. The names are the
on-disk format: changing one orphans every existing experiment folder.
"""

from __future__ import annotations

from pathlib import Path

# ------------------------------------------------------------------ a run folder
CONFIG = "config.json"          # what the job computes (written before submission)
SUBMISSION = "submission.json"  # how it was last submitted
RESULT = "result.json"          # its structured result: the run is done when this counts (core.runs)
ERROR = "error.json"            # its last failure
LOCK = "run.lock"               # held while a copy of the job works in the folder
ATTEMPTS = "attempts.json"      # the starts of each scheduler job (requeues counted)
METRICS = "metrics.jsonl"       # a training: one line per finished epoch
PROGRESS = "progress.json"      # a training: the latest step, epoch, images/s and val/acc
CHECKPOINT = "checkpoint.pt"    # a training: model, optimizer, position in the run
HITS = "correct.npy"            # an evaluation: which test images it got right

# ------------------------------------------------------------------ an experiment folder
SPEC = "spec.json"
PLAN = "plan.json"
SELECTION = "selection.json"
LAUNCH_LOCK, LAUNCH_JSON = "launch.lock", "launch.json"  # held / written by the launcher running the experiment
DRIVER_JSON = "driver.json"
CANCEL_JSON, SUBMIT_LOCK = "cancel.json", "submit.lock"
RESULTS_PARQUET, RESULTS_CSV, SELECTION_CSV = "results.parquet", "results.csv", "selection.csv"
SUMMARY_PARQUET, SUMMARY_CSV = "summary.parquet", "summary.csv"
FINDINGS_MD, FINDINGS_CSV = "findings.md", "findings.csv"
BOUMA_CSV = "bouma.csv"  # critical spacing per network and eccentricity (results.bouma_report)
FIGURES = "figures"
LOGS = "logs"
DATASETS = "datasets"
DATASET_JOBS = "jobs"  # under datasets/: the run folders of the jobs that build them
RUN_KINDS = ("train", "eval")  # the kinds of run folder named by their config hash, each in a folder of its name
DRIVER_LOGS = "driver"  # logs/driver: the detached driver's logs


def run_dir_name(kind: str, run_hash: str) -> str:
    """Where a run of this kind lives in an experiment folder, relative to it: train/<hash>, eval/<hash>."""
    if kind not in RUN_KINDS:
        raise ValueError(f"run kind {kind!r} is not one of {', '.join(RUN_KINDS)} "
                         f"(datasets live under {DATASETS}/{DATASET_JOBS}/<key>)")
    return f"{kind}/{run_hash}"


def run_dir(exp: Path, kind: str, run_hash: str) -> Path:
    """The run folder of a training or evaluation: <experiment>/train/<hash>, <experiment>/eval/<hash>."""
    return Path(exp) / run_dir_name(kind, run_hash)


def data_root(exp: Path) -> Path:
    """Where an experiment's datasets are built: <experiment>/datasets."""
    return Path(exp) / DATASETS


def dataset_job_dir(exp: Path, key: str) -> Path:
    """The run folder of the job that builds dataset `key`: <experiment>/datasets/jobs/<key>."""
    return data_root(exp) / DATASET_JOBS / key


def logs_dir(exp: Path, stage: str) -> Path:
    """The scheduler's log folder of a stage's jobs (or of the driver): <experiment>/logs/<stage>."""
    return Path(exp) / LOGS / stage


def logs_root(exp: Path) -> Path:
    """The folder under which every job of the experiment logs: <experiment>/logs."""
    return Path(exp) / LOGS


def run_folders(exp: Path, kind: str | None = None) -> list[Path]:
    """The experiment's run folders on disk (those of dataset jobs, trainings and evaluations), sorted;
    only those of `kind` ("dataset", "train" or "eval") when given."""
    kinds = {"dataset": f"{DATASETS}/{DATASET_JOBS}/*", **{k: f"{k}/*" for k in RUN_KINDS}}
    if kind is not None and kind not in kinds:
        raise ValueError(f"run kind {kind!r} is not one of {', '.join(kinds)}")
    patterns = [kinds[kind]] if kind else list(kinds.values())
    return sorted({p for pattern in patterns for p in Path(exp).glob(pattern) if p.is_dir()})
