"""plan.json: every job an experiment plans (its training runs and its evaluations), typed and validated.

The launcher writes it (sweeps.pipeline) before each stage; the results tables read it. Its JSON:
  {"experiment": "demo",
   "train": [{"hash", "dir", "model", "seed", "learning_rate", "config"}, ...],
   "eval":  [{"hash", "dir", "model", "model_hash", "learning_rate", "seed", "condition", "test_images"}, ...]}
`config` is the training run's TrainConfig and `condition` the evaluation's Condition, as JSON
(core.identity.to_jsonable): the plan keeps them as plain mappings, so this module needs no science.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import CorruptFileError, atomic_write_json, read_json

PLAN = "plan.json"  # its name in an experiment folder


@dataclass(frozen=True)
class TrainEntry:
    """One planned training run."""

    hash: str                # its config hash (the run folder's name)
    dir: str                 # its run folder, relative to the experiment folder: train/<hash>
    model: str               # display name of the sweep's model
    seed: int                # the replicate (initial weights and batch order)
    learning_rate: float
    config: dict[str, Any]   # the TrainConfig as JSON


@dataclass(frozen=True)
class EvalEntry:
    """One planned evaluation: a trained run on one condition."""

    hash: str                # its config hash (the run folder's name)
    dir: str                 # eval/<hash>
    model: str               # display name of the evaluated model
    model_hash: str          # the training run it evaluates
    learning_rate: float
    seed: int                # the training run's seed
    condition: dict[str, Any]  # the Condition as JSON: target_ecc, flanker_ecc, flanker_type, flanker_dset
    test_images: int         # how many test images (0: all)


@dataclass(frozen=True)
class Plan:
    """Every job of an experiment, in the order the launcher planned them."""

    experiment: str
    train: tuple[TrainEntry, ...] = ()
    eval: tuple[EvalEntry, ...] = ()

    def write(self, path: str | os.PathLike) -> Path:
        """Write the plan atomically (readers see the old plan or the new one, never a mix)."""
        return atomic_write_json(path, self)

    @classmethod
    def read(cls, path: str | os.PathLike) -> Plan | None:
        """The plan in `path`, or None when there is none. Raises CorruptFileError naming the file
        and the field when a field is missing, unknown or of the wrong type."""
        path = Path(path)
        obj = read_json(path)
        if obj is None:
            return None
        _check_keys(path, "plan", obj, cls)
        experiment = _field(path, "experiment", obj, str)
        lists = {key: _field(path, key, obj, list) for key in ("train", "eval")}
        train = tuple(_entry(path, f"train[{i}]", e, TrainEntry) for i, e in enumerate(lists["train"]))
        evals = tuple(_entry(path, f"eval[{i}]", e, EvalEntry) for i, e in enumerate(lists["eval"]))
        return cls(experiment, train, evals)


# JSON type each field must have (an int is a valid float; a bool is neither).
_JSON_TYPES: dict[Any, tuple[type, ...]] = {str: (str,), int: (int,), float: (int, float), list: (list,),
                                            dict[str, Any]: (dict,)}
_NAMES = {str: "a string", int: "an integer", float: "a number", list: "a list", dict[str, Any]: "an object"}


def _check_keys(path: Path, where: str, obj: Mapping[str, Any], cls: type) -> None:
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(obj) - set(known))
    if unknown:
        raise CorruptFileError(f"{path}: {where} has unknown fields {unknown}; valid: {known}")


def _field(path: Path, where: str, obj: Mapping[str, Any], want: Any) -> Any:
    key = where.rsplit(".", 1)[-1]
    if key not in obj:
        raise CorruptFileError(f"{path}: {where} is missing")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, _JSON_TYPES[want]):
        raise CorruptFileError(f"{path}: {where} must be {_NAMES[want]}, not {value!r}")
    return float(value) if want is float else value


def _entry(path: Path, where: str, obj: Any, cls: type) -> Any:
    if not isinstance(obj, dict):
        raise CorruptFileError(f"{path}: {where} must be an object, not {obj!r}")
    _check_keys(path, where, obj, cls)
    types = _HINTS[cls]
    return cls(**{f.name: _field(path, f"{where}.{f.name}", obj, types[f.name]) for f in dataclasses.fields(cls)})


_HINTS = {cls: typing.get_type_hints(cls) for cls in (TrainEntry, EvalEntry)}
