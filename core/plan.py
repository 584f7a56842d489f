"""plan.json and selection.json: what an experiment plans and what its select stage chose, typed and validated.

The launcher writes the plan (sweeps.pipeline) before each stage; the results tables read it. Its JSON:
  {"experiment": "demo",
   "train": [{"hash", "dir", "model", "seed", "learning_rate", "config"}, ...],
   "eval":  [{"hash", "dir", "model", "model_hash", "learning_rate", "seed", "condition", "test_images"}, ...]}
`config` is the training run's TrainConfig and `condition` the evaluation's Condition, as JSON
(core.identity.to_jsonable): the plan keeps them as plain mappings, so this module needs no science.

The select stage (sweeps.selection) writes the Selection; the results tables read it. Its JSON:
  {"rule", "rule_name", "seeds", "scope",
   "models": [{"model", "chosen", "learning_rate", "learning_rates", "chosen_runs": [{"hash", "learning_rate",
               "seed"}], "scores": [{"learning_rate", "seeds_done", <metric>...}],
               "candidates": [{"hash", "learning_rate", "seed", "state", "error", "best_epoch", <metric>...}]}]}
A <metric> is a namespaced key (train/loss, val/acc, ...). Only "models" is required (and, in each
of its entries, "model"; in each candidate, "hash" and "learning_rate"): a selection written before a
field existed still reads, with that field's default."""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import CorruptFileError, atomic_write_json, read_json


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


_REQUIRED = object()


def _field(path: Path, where: str, obj: Mapping[str, Any], want: Any, default: Any = _REQUIRED,
           nullable: bool = False) -> Any:
    """obj[key] (key: the last part of `where`) checked to be a `want`; `default` when it is absent
    (an error when no default is given); None allowed when `nullable`."""
    key = where.rsplit(".", 1)[-1]
    if key not in obj:
        if default is _REQUIRED:
            raise CorruptFileError(f"{path}: {where} is missing")
        return default
    return _check(path, where, obj[key], want, nullable)


def _check(path: Path, where: str, value: Any, want: Any, nullable: bool = False) -> Any:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, _JSON_TYPES[want]):
        raise CorruptFileError(f"{path}: {where} must be {_NAMES[want]}{' or null' if nullable else ''}, "
                               f"not {value!r}")
    return float(value) if want is float else value


def _entry(path: Path, where: str, obj: Any, cls: type) -> Any:
    if not isinstance(obj, dict):
        raise CorruptFileError(f"{path}: {where} must be an object, not {obj!r}")
    _check_keys(path, where, obj, cls)
    types = _HINTS[cls]
    return cls(**{f.name: _field(path, f"{where}.{f.name}", obj, types[f.name]) for f in dataclasses.fields(cls)})


_HINTS = {cls: typing.get_type_hints(cls) for cls in (TrainEntry, EvalEntry)}


# ------------------------------------------------------------------ selection.json
Metrics = dict[str, Any]  # namespaced metric -> a number, "nan"/"inf" (core.identity's spelling) or None (unknown)


@dataclass(frozen=True)
class Candidate:
    """One training run the select stage scored."""

    hash: str
    learning_rate: float
    seed: int = 0
    state: str = ""                 # its run state when the stage ran (core.runs.STATES)
    error: str = ""                 # why it failed ("" when it did not)
    best_epoch: int | None = None
    metrics: Metrics = field(default_factory=dict)  # its final train/loss, train/acc, val/loss, val/acc


@dataclass(frozen=True)
class Score:
    """One learning rate of a model, scored on the mean over its finished seeds (sweeps.spec.choose)."""

    learning_rate: float
    seeds_done: tuple[int, ...] = ()
    metrics: Metrics = field(default_factory=dict)  # the means: train/loss, val/loss, val/acc


@dataclass(frozen=True)
class ChosenRun:
    """A training run the selection chose (every finished seed of a chosen learning rate)."""

    hash: str
    learning_rate: float
    seed: int = 0


@dataclass(frozen=True)
class ModelSelection:
    """What the rule chose for one model of the sweep, and among what."""

    model: str
    chosen: str | None = None            # the first chosen run's hash; None: nothing chosen, nothing evaluated
    learning_rate: float | None = None   # the chosen learning rate when there is exactly one
    learning_rates: tuple[float, ...] = ()
    chosen_runs: tuple[ChosenRun, ...] = ()
    scores: tuple[Score, ...] = ()
    candidates: tuple[Candidate, ...] = ()


@dataclass(frozen=True)
class Selection:
    """selection.json: per model, the training runs to evaluate, chosen by the sweep's rule."""

    models: tuple[ModelSelection, ...] = ()
    rule: str = ""        # the rule in words
    rule_name: str = ""   # the rule's name (sweeps.spec.SELECTION_RULES)
    seeds: tuple[int, ...] = ()
    scope: str = ""       # what a score is computed over, in words

    def chosen_runs(self) -> list[tuple[str, str]]:
        """(model, train hash) of every chosen run, in the file's order, once each."""
        return list(dict.fromkeys((m.model, r.hash) for m in self.models for r in m.chosen_runs))

    def unselected(self) -> dict[str, ModelSelection]:
        """The models for which the rule chose no learning rate, by name."""
        return {m.model: m for m in self.models if m.chosen is None}

    def candidates(self) -> dict[str, tuple[str, Candidate]]:
        """Every scored training run by hash, with its model."""
        return {c.hash: (m.model, c) for m in self.models for c in m.candidates}

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "rule_name": self.rule_name, "seeds": list(self.seeds), "scope": self.scope,
                "models": [{"model": m.model, "chosen": m.chosen, "learning_rate": m.learning_rate,
                            "learning_rates": list(m.learning_rates),
                            "chosen_runs": [dataclasses.asdict(r) for r in m.chosen_runs],
                            "scores": [{"learning_rate": s.learning_rate, "seeds_done": list(s.seeds_done),
                                        **s.metrics} for s in m.scores],
                            "candidates": [{"hash": c.hash, "learning_rate": c.learning_rate, "seed": c.seed,
                                            "state": c.state, "error": c.error, **c.metrics,
                                            "best_epoch": c.best_epoch} for c in m.candidates]}
                           for m in self.models]}

    def write(self, path: str | os.PathLike) -> Path:
        """Write the selection atomically."""
        return atomic_write_json(path, self.to_json())

    @classmethod
    def from_json(cls, path: str | os.PathLike, obj: Any) -> Selection:
        """The selection in `obj` (read from `path`, named in errors). Raises CorruptFileError naming
        the file and the field when a field is missing, unknown or of the wrong type."""
        path = Path(path)
        if not isinstance(obj, dict):
            raise CorruptFileError(f"{path}: a selection must be an object, not {obj!r}")
        _check_keys(path, "selection", obj, cls)
        models = _field(path, "models", obj, list)
        return cls(models=tuple(_model(path, f"models[{i}]", m) for i, m in enumerate(models)),
                   rule=_field(path, "rule", obj, str, ""), rule_name=_field(path, "rule_name", obj, str, ""),
                   seeds=_items(path, "seeds", obj, int), scope=_field(path, "scope", obj, str, ""))

    @classmethod
    def read(cls, path: str | os.PathLike) -> Selection | None:
        """The selection in `path`, or None when there is none (before the select stage ran)."""
        obj = read_json(path)
        return None if obj is None else cls.from_json(path, obj)


def _object(path: Path, where: str, obj: Any, cls: type, metrics: bool = False) -> dict[str, Any]:
    """`obj` checked to be an object holding only `cls`'s fields (and namespaced metrics when `metrics`)."""
    if not isinstance(obj, dict):
        raise CorruptFileError(f"{path}: {where} must be an object, not {obj!r}")
    known = [f.name for f in dataclasses.fields(cls) if f.name != "metrics"]
    unknown = sorted(k for k in obj if k not in known and not (metrics and "/" in k))
    if unknown:
        raise CorruptFileError(f"{path}: {where} has unknown fields {unknown}; valid: {known}"
                               + (" and namespaced metrics (val/acc, ...)" if metrics else ""))
    return obj


def _metrics(path: Path, where: str, obj: Mapping[str, Any]) -> Metrics:
    out = {k: v for k, v in obj.items() if "/" in k}
    for k, v in out.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, str, type(None))):
            raise CorruptFileError(f"{path}: {where}.{k} must be a number, a string or null, not {v!r}")
    return out


def _items(path: Path, where: str, obj: Mapping[str, Any], want: Any) -> tuple[Any, ...]:
    """obj[key], a list (empty when absent) of `want`s."""
    return tuple(_check(path, f"{where}[{i}]", v, want) for i, v in enumerate(_field(path, where, obj, list, [])))


def _model(path: Path, where: str, obj: Any) -> ModelSelection:
    obj = _object(path, where, obj, ModelSelection)
    lists = {k: _field(path, f"{where}.{k}", obj, list, []) for k in ("chosen_runs", "scores", "candidates")}
    return ModelSelection(
        model=_field(path, f"{where}.model", obj, str),
        chosen=_field(path, f"{where}.chosen", obj, str, None, nullable=True),
        learning_rate=_field(path, f"{where}.learning_rate", obj, float, None, nullable=True),
        learning_rates=_items(path, f"{where}.learning_rates", obj, float),
        chosen_runs=tuple(_chosen(path, f"{where}.chosen_runs[{i}]", r) for i, r in enumerate(lists["chosen_runs"])),
        scores=tuple(_score(path, f"{where}.scores[{i}]", s) for i, s in enumerate(lists["scores"])),
        candidates=tuple(_candidate(path, f"{where}.candidates[{i}]", c) for i, c in enumerate(lists["candidates"])))


def _chosen(path: Path, where: str, obj: Any) -> ChosenRun:
    obj = _object(path, where, obj, ChosenRun)
    return ChosenRun(_field(path, f"{where}.hash", obj, str), _field(path, f"{where}.learning_rate", obj, float),
                     _field(path, f"{where}.seed", obj, int, 0))


def _score(path: Path, where: str, obj: Any) -> Score:
    obj = _object(path, where, obj, Score, metrics=True)
    return Score(_field(path, f"{where}.learning_rate", obj, float), _items(path, f"{where}.seeds_done", obj, int),
                 _metrics(path, where, obj))


def _candidate(path: Path, where: str, obj: Any) -> Candidate:
    obj = _object(path, where, obj, Candidate, metrics=True)
    return Candidate(_field(path, f"{where}.hash", obj, str), _field(path, f"{where}.learning_rate", obj, float),
                     seed=_field(path, f"{where}.seed", obj, int, 0),
                     state=_field(path, f"{where}.state", obj, str, ""),
                     error=_field(path, f"{where}.error", obj, str, "", nullable=True) or "",
                     best_epoch=_field(path, f"{where}.best_epoch", obj, int, None, nullable=True),
                     metrics=_metrics(path, where, obj))
