"""`python -m sweeps.launch NAME`: run a sweep's stages on SLURM or on this machine.

    python -m sweeps.launch demo --quick           # minutes on a laptop (local executor)
    python -m sweeps.launch demo                   # the paper's demo; SLURM when a controller answers
    python -m sweeps.launch demo --dry-run         # the plan, nothing submitted
    python -m sweeps.launch demo --status          # per stage: done, running, pending, failed
    python -m sweeps.launch demo --report          # redraw figures, tables and findings.md from the runs
    python -m sweeps.launch demo --quick --seeds 3 # 3 replicates (seeds 0, 1, 2) of every training run

A sweep NAME is a module sweeps/NAME.py with a function `sweep(quick: bool) -> SweepSpec`; a file
path/to/my_sweep.py or an importable module package.module with that function works the same way
(the experiment folder is named by the spec's name).
Relaunching the same command submits nothing that is done, reruns what failed or is missing
(--retry-failed=false keeps failures), re-attaches to jobs still running, and continues.
Exit status: 0 all done, 1 some jobs failed (they are rows in the results table), 2 usage error (one line, nothing written),
3 another launcher is running this experiment.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import logging
import math
import os
import shlex
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cluster.backends import BACKENDS, KINDS, resolve_kind
from cluster.resources import Resources, split_sbatch
from core import cancel as cancel_mark
from core.atomic import CorruptFileError, read_json
from core.cancel import Cancelled
from core.cli import Parser, add_arguments, arg, from_namespace
from core.layout import CONFIG, PLAN, SPEC, run_folders
from ecc import sources

from .driver import DRIVER_MEM_GB
from .preflight import (
    SweepCodeError,
    call_sweep,
    check_here,
    check_networks,
    code_error,
    fit_here,
    print_traceback,
)
from .spec import SpecError, StageResources, SweepSpec, override_resources

if TYPE_CHECKING:
    from .pipeline import Pipeline

ONE_SHOT = {"executor", "out", "status", "dry_run", "report", "detach", "cancel", "logs"}  # not passed to a driver
# The built-in sweeps, by the name a launch gives (sweeps/NAME.py, "_" written "-"): one explicit list,
# checked against the modules that define sweep() by tests/test_own_sweeps.py.
BUILTIN_SWEEPS = ("demo", "dcnn", "pooling", "similarity", "flanker-training", "architectures", "smoke")


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
    report: bool = arg(False, "redraw the figures, the tables and findings.md from the run folders, submit nothing")
    seeds: int = arg(0, "replicates: train every model and learning rate with seeds 0..SEEDS-1 (0 = the seeds the "
                     "experiment was launched with, else the sweep's); a relaunch with more seeds trains only the new ones")
    retry_failed: bool = arg(True, "resubmit failed jobs on relaunch (false: keep them as failed rows)",
                             aliases=("retry-failed",))
    conditions_per_job: int = arg(0, "conditions per eval job (0 = the sweep's choice): model loading and start-up "
                                  "are paid once per job", aliases=("conditions-per-job",))
    device: str = arg("auto", "device of the jobs: auto, cpu or cuda", choices=("auto", "cpu", "cuda"))
    partition: str | None = arg(None, "SLURM partition for every stage (default: the sweep's)", unset=True)
    gpus: int | None = arg(None, "GPUs per train/eval job (default: the sweep's)", unset=True)
    cpus: int | None = arg(None, "CPU cores per train/eval job (default: the sweep's; with the local executor "
                           "at most this machine's cores)", unset=True)
    mem: float | None = arg(None, "memory per train/eval job in GB (default: the sweep's)", unset=True)
    time: int | None = arg(None, "time limit per job in minutes, every stage (default: the sweep's)", unset=True)
    array_parallelism: int | None = arg(None, "most jobs of a stage running at once (default: the sweep's)",
                                        aliases=("array-parallelism",), unset=True)
    sbatch: str = arg("", "extra sbatch options for every stage (and the driver), split by shell rules, "
                      "e.g. \"qos=high constraint='a100|h100'\"")
    detach: bool = arg(False, "run the pipeline itself as a job (SLURM: 1 CPU, no GPU, --driver-time; local: a "
                       "background process) and return at once, printing how to follow it")
    driver_time: int = arg(4320, "time limit of the --detach driver job in minutes (it is requeued at its limit "
                           "and resumes)", aliases=("driver-time",))
    cancel: bool = arg(False, "cancel every queued or running job of this experiment (all stages and the driver); "
                       "what is done is kept, a relaunch resubmits the rest")
    logs: str | None = arg(None, "print the log files and their tails of one run: its label (as --status shows) or "
                           "the start of its folder name; `driver` for the --detach driver", unset=True)
    verbose: bool = arg(False, "log details and show tracebacks")

    def __post_init__(self) -> None:
        for name in ("gpus", "cpus", "array_parallelism", "time"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "gpus" else 1):
                raise ValueError(f"--{name.replace('_', '-')} must be >= {0 if name == 'gpus' else 1}, got {value}")
        if self.mem is not None and not 0 < self.mem < math.inf:
            raise ValueError(f"--mem must be > 0 GB, got {self.mem} (a finite number of GB, e.g. --mem 16)")
        if self.seeds < 0:
            raise ValueError(f"--seeds must be >= 1 (or 0 for the sweep's), got {self.seeds}")
        if self.conditions_per_job < 0:
            raise ValueError(f"--conditions-per-job must be >= 1 (or 0 for the sweep's), got {self.conditions_per_job}")
        if self.driver_time < 1:
            raise ValueError(f"--driver-time must be >= 1 minute, got {self.driver_time}")
        if sum((self.status, self.dry_run, self.report, self.detach, self.cancel, self.logs is not None)) > 1:
            raise ValueError("use at most one of --status, --dry-run, --report, --detach, --cancel, --logs")

    def resources(self, base: StageResources) -> StageResources:
        extra = split_sbatch(self.sbatch) or None
        everywhere = dict(partition=self.partition, time_min=self.time, array_parallelism=self.array_parallelism)
        compute = dict(gpus=self.gpus, cpus=self.cpus, mem_gb=self.mem)

        def apply(res, **kw):
            res = override_resources(res, **kw)
            return dataclasses.replace(res, extra_sbatch=res.extra_sbatch + extra) if extra else res

        return StageResources(datasets=apply(base.datasets, **everywhere),
                              train=apply(base.train, **everywhere, **compute),
                              eval=apply(base.eval, **everywhere, **compute))

    def driver_resources(self, base: StageResources) -> Resources:
        """The --detach driver job: 1 CPU, no GPU, a long time limit; partition and extras as the stages'."""
        stages = self.resources(base)
        return dataclasses.replace(stages.datasets, cpus=1, gpus=0, mem_gb=DRIVER_MEM_GB, time_min=self.driver_time,
                                   array_parallelism=1, signal_delay_s=None)

    def driver_argv(self, sweep: str, kind: str) -> list[str]:
        """The options a detached driver runs with: this launch's, minus the one-shot actions."""
        argv = [sweep_reference(sweep)]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ONE_SHOT or value is None or value == f.default:
                continue
            argv.append(f"--{f.name}={str(value).lower() if isinstance(value, bool) else value}")
        return [*argv, f"--executor={kind}", f"--out={Path(self.out).expanduser().resolve()}"]


def load_sweep(name: str) -> Callable[[bool], SweepSpec]:
    """The `sweep(quick)` function a launch names: a built-in NAME (sweeps/NAME.py), a file
    path/to/my_sweep.py, or an importable module package.module. Raises ValueError naming the choices."""
    builtin = available_sweeps()
    if name in builtin:
        return builtin[name]
    if name.endswith(".py") or os.sep in name:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ValueError(f"sweep file {name!r} does not exist")
        module_name = f"_sweep_file_{path.stem}_{abs(hash(str(path.resolve()))):x}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"sweep file {name!r} cannot be imported (a Python file with sweep(quick) is needed)")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses defined in the file need their module registered
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # the file's own error (SyntaxError, NameError...): one line, file and line
            raise code_error(e, str(path)) from e
    elif "." in name:
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # `python -m` puts the working folder first; a driver job too
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            raise ValueError(f"sweep module {name!r} cannot be imported: {e}") from None
        except Exception as e:
            raise code_error(e) from e
    else:
        raise ValueError(f"unknown sweep {name!r}; available: {', '.join(sorted(builtin))}, "
                         "or a file path/to/sweep.py, or a module package.module")
    fn = getattr(module, "sweep", None)
    if not callable(fn):
        raise ValueError(f"{name!r} has no function sweep(quick: bool) -> SweepSpec")
    return fn


def sweep_reference(name: str) -> str:
    """The sweep name as another process (a detached driver) must see it: a file path made absolute."""
    if name not in available_sweeps() and (name.endswith(".py") or os.sep in name):
        return str(Path(name).expanduser().resolve())
    return name


def available_sweeps() -> dict[str, Callable[[bool], SweepSpec]]:
    """The built-in sweeps' `sweep(quick)` functions, by name (BUILTIN_SWEEPS)."""
    return {name: importlib.import_module(f"sweeps.{name.replace('-', '_')}").sweep for name in BUILTIN_SWEEPS}


def _recorded_seeds(exp_dir: Path) -> tuple[int, ...] | None:
    """The seeds in an experiment's spec.json (None when there is none, or one from before seeds were
    recorded). A damaged spec.json is refused (ValueError: a usage error), naming the --seeds that
    keeps the replicates its run folders hold: read as "no seeds", it would silently drop them and
    be overwritten by the launch."""
    path = exp_dir / SPEC
    try:
        recorded = read_json(path)
    except CorruptFileError:
        raise ValueError(_damaged_spec(path, "not a readable JSON object")) from None
    except OSError:  # no experiment folder to read (a file on the way, no permission): --out's check says why
        return None
    if recorded is None or "seeds" not in recorded:
        return None
    seeds = recorded["seeds"]
    if isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        return tuple(seeds)
    raise ValueError(_damaged_spec(path, f"its seeds are {seeds!r}, not a list of integers"))


def _damaged_spec(path: Path, why: str) -> str:
    """One line: what is wrong with spec.json and the --seeds to pass (from the training runs' config.json)."""
    found: set[int] = set()
    for config in (d / CONFIG for d in run_folders(path.parent, "train")):
        try:
            seed = ((read_json(config) or {}).get("config") or {}).get("seed")
        except (OSError, CorruptFileError, AttributeError):
            continue
        if isinstance(seed, int) and not isinstance(seed, bool):
            found.add(seed)
    held = f"its training runs hold seeds {sorted(found)}" if found else "no training run records its seeds"
    n = f"--seeds {max(found) + 1}" if found else "--seeds N (the number of seeds it was launched with)"
    return (f"{path} is damaged ({why}); {held}: relaunch with {n} to keep them "
            "(the launch then rewrites spec.json)")


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

    if ns.name is None:
        parser.error(f"no sweep given; available: {', '.join(sorted(available_sweeps()))}")
    # Everything is checked before anything is written: the sweep's code and its spec, then the
    # resources against where the jobs run, then the output folder and the data.
    try:
        spec = call_sweep(load_sweep(ns.name), ns.name, cfg.quick)
        if cfg.conditions_per_job:
            spec = dataclasses.replace(spec, conditions_per_job=cfg.conditions_per_job)
        exp_dir = Path(cfg.out).expanduser() / spec.name
        # Without --seeds, an experiment keeps the seeds it was launched with: a plain relaunch or
        # --status must not drop the replicates from the plan.
        seeds = tuple(range(cfg.seeds)) if cfg.seeds else _recorded_seeds(exp_dir) or spec.seeds
        if seeds != spec.seeds:
            spec = dataclasses.replace(spec, seeds=seeds)
        kind = resolve_kind(cfg.executor)
        if cfg.detach and not BACKENDS[kind].detaches:
            raise ValueError(f"--detach needs an executor that runs jobs on their own "
                             f"({', '.join(k for k, b in BACKENDS.items() if b.detaches)}), not {kind} "
                             "(debug jobs run inside the launcher)")
        resources = cfg.resources(fit_here(spec.resources, kind))
        check_here(kind, cfg.cpus, cfg.device)
        if cfg.report and not (exp_dir / PLAN).is_file():
            raise ValueError(f"nothing to report in {exp_dir} (no plan.json): launch the sweep first, "
                             "or point --out at the folder that holds it")
        spec.check_data()  # a flanker set or background folder to fetch by hand (the Pipeline checks it too)
        networks = [] if (cfg.status or cfg.cancel or cfg.logs is not None) else check_networks(spec, exp_dir)
        if not (cfg.status or cfg.dry_run or cfg.cancel or cfg.logs is not None):
            # The data source before anything runs: a missing or damaged MNIST file is a usage error,
            # named in one line, and no job is submitted (every dataset key needs its fingerprint).
            sources.fingerprint(spec.source)
            _check_writable(exp_dir)  # the last check: it creates the experiment folder
        from . import control
        from .pipeline import LauncherBusy, Pipeline

        pipeline = Pipeline(spec, exp_dir, executor=kind, resources=resources,
                            retry_failed=cfg.retry_failed, device=cfg.device)
    except (SpecError, ValueError, sources.MissingDataError) as e:
        if isinstance(e, SweepCodeError) and cfg.verbose:
            print_traceback(e)
        parser.error(str(e))

    try:
        if cfg.dry_run:
            print("\n".join(pipeline.plan_lines(networks)))
            return 0
        if cfg.status:
            print("\n".join(control.status_lines(pipeline)))
            return 0
        if cfg.logs is not None:
            try:
                lines = control.logs_lines(pipeline, cfg.logs)
            except ValueError as e:
                parser.error(str(e))
            print("\n".join(lines))
            return 0
        if cfg.cancel:
            print("\n".join(control.cancel(pipeline)))
            return 0
        if cfg.detach:
            return _detach(pipeline, cfg, ns.name)
        if cfg.report:
            pipeline.collect()
            return 0
        return pipeline.run()
    except LauncherBusy as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except Cancelled as e:
        print(f"cancelled: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if pipeline.generation is not None and cancel_mark.generation(pipeline.exp) != pipeline.generation:
            print("cancelled by --cancel: it stops every job of the experiment; relaunch the same command to "
                  "continue", file=sys.stderr)
        else:
            print("interrupted: jobs already submitted keep running; relaunch the same command to continue",
                  file=sys.stderr)
        return 130
    except Exception as e:
        if cfg.verbose:
            raise
        print(f"error: {type(e).__name__}: {e} (--verbose for the traceback)", file=sys.stderr)
        return 1


def _detach(pipeline: Pipeline, cfg: LaunchConfig, sweep: str) -> int:
    """Start the driver and print how to follow it; exit 3 when the experiment is busy."""
    from . import driver

    with pipeline._lock():  # exit 3 when a launcher or a driver runs this experiment now
        pass
    argv = cfg.driver_argv(sweep, pipeline.kind)
    rec = driver.detach(pipeline.exp, pipeline.kind, argv, resources=cfg.driver_resources(pipeline.spec.resources),
                        name=pipeline.spec.name, cwd=os.getcwd())
    follow = ["python", "-m", "sweeps.launch", sweep_reference(sweep), *(["--quick"] if cfg.quick else []),
              f"--out={Path(cfg.out).expanduser().resolve()}"]
    cmd = " ".join(shlex.quote(a) for a in follow)
    print(f"detached: driver job {rec['job_id']} ({rec['executor']}) runs {pipeline.spec.name} in {pipeline.exp}\n"
          f"  log:     {rec['log']}\n"
          f"  status:  {cmd} --status\n"
          f"  logs:    {cmd} --logs driver     (or: tail -f {shlex.quote(str(rec['log']))})\n"
          f"  cancel:  {cmd} --cancel\n"
          "  relaunching (detached or not) continues where it stopped")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
