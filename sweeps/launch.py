"""`python -m sweeps.launch NAME`: run a sweep's stages on SLURM or on this machine.

    python -m sweeps.launch demo --quick           # minutes on a laptop (local executor)
    python -m sweeps.launch demo                   # the paper's demo; SLURM when a controller answers
    python -m sweeps.launch demo --dry-run         # the plan, nothing submitted
    python -m sweeps.launch demo --status          # per stage: done, running, pending, failed
    python -m sweeps.launch demo --report          # redraw the figures from the results table

A sweep NAME is a module sweeps/NAME.py with a function `sweep(quick: bool) -> SweepSpec`.
Relaunching the same command submits nothing that is done, reruns what failed or is missing
(--retry-failed=false keeps failures), re-attaches to jobs still running, and continues.
Exit status: 0 all done, 1 some jobs failed (they are rows in the results table), 2 usage error,
3 another launcher is running this experiment.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import pkgutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cluster.executors import KINDS
from ecc import sources
from ecc.cli import Parser, add_arguments, arg, from_namespace

from .spec import SpecError, StageResources, SweepSpec, override_resources

NOT_SWEEPS = {"spec", "pipeline", "launch", "tasks", "__main__"}


@dataclass(frozen=True)
class LaunchConfig:
    """Options of one launch (the sweep itself is plain Python in sweeps/NAME.py)."""

    quick: bool = arg(False, "the sweep's small variant: reduced sizes that finish in minutes on a laptop")
    executor: str = arg("auto", "where jobs run: auto (SLURM when `scontrol ping` answers, else local), slurm, "
                        "local (this machine, as many jobs at once as fit) or debug (in this process)", choices=KINDS)
    out: str = arg("experiments", "folder of experiment folders: the experiment lives in OUT/<sweep name>")
    status: bool = arg(False, "print per stage how many jobs are pending, running, done, failed, and exit")
    dry_run: bool = arg(False, "print the plan (jobs per stage, dropped conditions, resources); submit nothing",
                        aliases=("dry-run",))
    report: bool = arg(False, "redraw the figures and the table from the run folders, submit nothing")
    retry_failed: bool = arg(True, "resubmit failed jobs on relaunch (false: keep them as failed rows)",
                             aliases=("retry-failed",))
    conditions_per_job: int = arg(0, "conditions per eval job (0 = the sweep's choice): model loading and start-up "
                                  "are paid once per job", aliases=("conditions-per-job",))
    device: str = arg("auto", "device of the jobs: auto, cpu or cuda", choices=("auto", "cpu", "cuda"))
    partition: str | None = arg(None, "SLURM partition for every stage (default: the sweep's)")
    gpus: int | None = arg(None, "GPUs per train/eval job (default: the sweep's)")
    cpus: int | None = arg(None, "CPU cores per train/eval job (default: the sweep's)")
    mem: float | None = arg(None, "memory per train/eval job in GB (default: the sweep's)")
    time: int | None = arg(None, "time limit per job in minutes, every stage (default: the sweep's)")
    array_parallelism: int | None = arg(None, "most jobs of a stage running at once (default: the sweep's)",
                                        aliases=("array-parallelism",))
    sbatch: str = arg("", "extra sbatch options for every stage, e.g. 'qos=high constraint=a100'")
    verbose: bool = arg(False, "log details and show tracebacks")

    def __post_init__(self) -> None:
        for name in ("gpus", "cpus", "array_parallelism", "time"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "gpus" else 1):
                raise ValueError(f"--{name.replace('_', '-')} must be >= {0 if name == 'gpus' else 1}, got {value}")
        if self.mem is not None and not self.mem > 0:
            raise ValueError(f"--mem must be > 0 GB, got {self.mem}")
        if self.conditions_per_job < 0:
            raise ValueError(f"--conditions-per-job must be >= 1 (or 0 for the sweep's), got {self.conditions_per_job}")
        if sum((self.status, self.dry_run, self.report)) > 1:
            raise ValueError("use at most one of --status, --dry-run, --report")

    def resources(self, base: StageResources) -> StageResources:
        extra = tuple(self.sbatch.split()) if self.sbatch else None
        everywhere = dict(partition=self.partition, time_min=self.time, array_parallelism=self.array_parallelism)
        compute = dict(gpus=self.gpus, cpus=self.cpus, mem_gb=self.mem)

        def apply(res, **kw):
            res = override_resources(res, **kw)
            return dataclasses.replace(res, extra_sbatch=res.extra_sbatch + extra) if extra else res

        return StageResources(datasets=apply(base.datasets, **everywhere),
                              train=apply(base.train, **everywhere, **compute),
                              eval=apply(base.eval, **everywhere, **compute))


def available_sweeps() -> dict[str, Callable[[bool], SweepSpec]]:
    """Every module sweeps/NAME.py that defines `sweep(quick)`, by NAME with "_" written "-"."""
    import sweeps

    out = {}
    for info in pkgutil.iter_modules(sweeps.__path__):
        if info.name in NOT_SWEEPS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"sweeps.{info.name}")
        if callable(getattr(module, "sweep", None)):
            out[info.name.replace("_", "-")] = module.sweep  # sweeps/flanker_training.py is "flanker-training"
    return out


def _check_writable(folder: Path) -> None:
    try:  # creating it can fail too (a file on the way, a read-only or missing mount)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ValueError(f"output folder {folder} is not writable ({e.strerror or e}); "
                         "choose another with --out") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="python -m sweeps.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="the sweep to run (a module sweeps/NAME.py)")
    add_arguments(parser, LaunchConfig)
    ns = parser.parse_args(argv)
    try:
        cfg = from_namespace(LaunchConfig, ns)
    except ValueError as e:
        parser.error(str(e))
    logging.basicConfig(level=logging.INFO if cfg.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s" if cfg.verbose else "%(message)s")

    sweeps = available_sweeps()
    if ns.name is None or ns.name not in sweeps:
        what = "no sweep given" if ns.name is None else f"unknown sweep {ns.name!r}"
        parser.error(f"{what}; available: {', '.join(sorted(sweeps))}")
    try:
        spec = sweeps[ns.name](cfg.quick)
        if cfg.conditions_per_job:
            spec = dataclasses.replace(spec, conditions_per_job=cfg.conditions_per_job)
        resources = cfg.resources(spec.resources)
        exp_dir = Path(cfg.out).expanduser() / spec.name
        if cfg.report and not (exp_dir / "plan.json").is_file():
            raise ValueError(f"nothing to report in {exp_dir} (no plan.json): launch the sweep first, "
                             "or point --out at the folder that holds it")
        if not (cfg.status or cfg.dry_run):
            _check_writable(exp_dir)
            # The data source before anything runs: a missing or damaged MNIST file is a usage error,
            # named in one line, and no job is submitted (every dataset key needs its fingerprint).
            sources.fingerprint(spec.source)
        from .pipeline import LauncherBusy, Pipeline

        pipeline = Pipeline(spec, exp_dir, executor=cfg.executor, resources=resources,
                            retry_failed=cfg.retry_failed, device=cfg.device, progress=sys.stderr.isatty())
    except (SpecError, ValueError, sources.MissingDataError) as e:
        parser.error(str(e))

    try:
        if cfg.dry_run:
            print("\n".join(pipeline.plan_lines()))
            return 0
        if cfg.status:
            for report in pipeline.status():
                print(report.line())
                for label, err in report.failed:
                    print(f"    failed: {label}: {err}")
            return 0
        if cfg.report:
            pipeline.collect()
            return 0
        return pipeline.run()
    except LauncherBusy as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted: jobs already submitted keep running; relaunch the same command to continue",
              file=sys.stderr)
        return 130
    except Exception as e:
        if cfg.verbose:
            raise
        print(f"error: {type(e).__name__}: {e} (--verbose for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
