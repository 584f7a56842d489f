"""What a launch checks before it writes anything, beyond the spec's own validation (sweeps/spec.py):
that the sweep's own code runs, that every network builds and gives logits of the right shape (a
factory of the user's: ecc/factory.py) from the source its runs were trained with, and that the
resources can work where the jobs run.

An error in a user's sweep file is a usage error of one line naming the file and line; --verbose
shows its traceback. A sweep that declares no resources gets, on this machine, resources that fit
it (StageResources' defaults ask for 8 CPUs and a GPU per training job); SLURM keeps them.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import traceback
from collections.abc import Callable
from pathlib import Path

from cluster.backends import BACKENDS
from cluster.resources import fit_capacity, local_capacity
from ecc.config import check_provenance, provenance

from .spec import STAGE_NAMES, SpecError, StageResources, SweepSpec

_OURS = tuple(str(Path(__file__).resolve().parents[1] / p) + os.sep for p in ("core", "ecc", "cluster", "sweeps",
                                                                              "results"))


class SweepCodeError(ValueError):
    """An exception raised by a sweep's own code (at import or in `sweep(quick)`), as one line that
    names the file and line; the original exception is its __cause__."""


def _where(e: BaseException, own_file: str | None = None) -> str:
    """`FILE line N` where the sweep's code raised `e`: the innermost frame in its own file, else the
    innermost outside this project's packages, else the innermost."""
    if isinstance(e, SyntaxError) and e.filename:
        return f"{e.filename} line {e.lineno}"
    frames = [f for f in traceback.extract_tb(e.__traceback__) if not f.filename.startswith("<")]
    same = [f for f in frames if own_file and os.path.abspath(f.filename) == os.path.abspath(own_file)]
    theirs = [f for f in frames if not os.path.abspath(f.filename).startswith(_OURS)]
    frame = (same or theirs or frames or [None])[-1]
    return "the sweep" if frame is None else f"{frame.filename} line {frame.lineno}"


def code_error(e: BaseException, own_file: str | None = None) -> SweepCodeError:
    """The one-line usage error for an exception of the sweep's code (raise it `from e`)."""
    what = e.msg if isinstance(e, SyntaxError) else str(e)
    if not isinstance(e, ValueError):  # the spec's and the configs' own checks already name the value
        what = f"{type(e).__name__}: {what}; --verbose shows the traceback"
    return SweepCodeError(f"{_where(e, own_file)}: {what}")


def print_traceback(e: BaseException) -> None:
    """The traceback of the sweep's own exception (for --verbose), on stderr."""
    traceback.print_exception(e.__cause__ or e)


def call_sweep(fn: Callable[[bool], SweepSpec], name: str, quick: bool) -> SweepSpec:
    """`fn(quick)`, checked: it takes `quick`, runs without an exception, and returns a SweepSpec."""
    code = getattr(fn, "__code__", None)
    own_file = code.co_filename if code is not None else None
    try:
        inspect.signature(fn).bind(quick)
    except TypeError:
        at = f"{own_file} line {code.co_firstlineno}: " if code is not None else ""
        raise SpecError(f"{at}sweep{inspect.signature(fn)} of {name!r} must take the argument quick: "
                        "def sweep(quick: bool = False) -> SweepSpec") from None
    except ValueError:  # no signature to inspect (a builtin): let the call tell
        pass
    try:
        spec = fn(quick)
    except Exception as e:
        raise code_error(e, own_file) from e
    if not isinstance(spec, SweepSpec):
        raise SpecError(f"sweep({quick}) of {name!r} returned {type(spec).__name__}, not a SweepSpec")
    return spec


def runs_here(kind: str) -> bool:
    """Whether jobs of this executor kind run on this machine (local processes, or in the launcher)."""
    backend = BACKENDS[kind]
    return backend.shares_cpus or backend.waits_in_order


def fit_here(resources: StageResources, kind: str) -> StageResources:
    """A sweep that declares no resources (StageResources' defaults: 8 CPUs and a GPU per training
    job), cut down to this machine's cores, GPUs and memory when the jobs run here; declared
    resources, and every stage on SLURM, are kept."""
    if not resources.fit_local or not runs_here(kind):
        return resources
    cap = local_capacity()
    return dataclasses.replace(resources, **{name: fit_capacity(getattr(resources, name), cap) for name in STAGE_NAMES})


def check_here(kind: str, cpus: int | None, device: str) -> None:
    """Refuse (ValueError) a --cpus beyond this machine's cores or a --device cuda without a visible
    GPU when the jobs run here."""
    if not runs_here(kind):
        return
    cap = local_capacity()
    if cpus is not None and cpus > cap.cpus:
        raise ValueError(f"--cpus {cpus} is more than the {cap.cpus} core(s) this machine gives {kind} jobs; "
                         f"pass at most --cpus {cap.cpus}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda, but no GPU is visible here (torch.cuda.is_available() is false); "
                             "use --device auto or cpu")


def check_networks(spec: SweepSpec, exp_dir: Path) -> list[str]:
    """Every model of the sweep built once and run on a sample batch (ecc.factory.FactoryError, one
    line, for a factory that cannot be imported or called, returns no nn.Module or logits of the
    wrong shape; timm missing says what to install); a training run of `exp_dir` whose config.json
    records another source of its factory is refused (ValueError naming the run and both digests).
    Returns the --dry-run's lines: each network's parameters and forward FLOPs per image."""
    from ecc import factory  # torch: loaded by a launch that builds networks, not by --status
    from ecc.model import build

    lines, sources = [], {}
    for name, cfg in spec.models:
        shape = cfg.stimulus.shape
        net = build(cfg.model, cfg.stimulus.crop_size, num_scales=cfg.stimulus.num_scales)
        family = "EccNet"
        if cfg.model.factory:
            factory.check(net, cfg.model.factory, shape, cfg.model.num_classes)
            family = f"{cfg.model.factory} ({cfg.model.view} view)"
            sources[cfg.model.factory] = provenance(cfg)
        c = factory.cost(net, shape)
        lines.append(f"[network] {name}: {family}, input {'x'.join(map(str, shape))}, {c['params']:,} parameters, "
                     f"{c['flops']:,} forward FLOPs per image")
    for run in spec.train_runs():
        if run.config.model.factory and (exp_dir / run.dir).is_dir():
            check_provenance(exp_dir / run.dir, run.config, sources[run.config.model.factory])
    return lines
