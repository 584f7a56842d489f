"""An experiment folder's records of what was planned and chosen: plan.json (core.plan.Plan) and
selection.json (written by the launcher's select stage; docs/architecture.md)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from core.atomic import CorruptFileError, read_json
from core.plan import PLAN, EvalEntry, Plan, TrainEntry

logger = logging.getLogger(__name__)

SELECTION = "selection.json"


def read_plan(exp_dir: str | Path) -> Plan:
    """plan.json of an experiment (raises FileNotFoundError naming the folder when absent)."""
    exp_dir = Path(exp_dir)
    plan = Plan.read(exp_dir / PLAN)
    if plan is None:
        raise FileNotFoundError(f"{exp_dir / PLAN} does not exist: is {exp_dir} an experiment folder "
                                "(launched with `python -m sweeps.launch`)?")
    return plan


def read_selection(exp_dir: str | Path) -> dict[str, Any] | None:
    """selection.json, or None before the select stage ran (or when it is unreadable: logged)."""
    try:
        return read_json(Path(exp_dir) / SELECTION, ("models",))
    except CorruptFileError as e:
        logger.warning("ignoring an unreadable selection: %s", e)
        return None


Entry = TypeVar("Entry", TrainEntry, EvalEntry)


def unique(entries: Iterable[Entry]) -> list[Entry]:
    """Plan entries once each, by hash (the first listed wins)."""
    out: dict[str, Entry] = {}
    for entry in entries:
        out.setdefault(entry.hash, entry)
    return list(out.values())


def chosen_runs(selection: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(model, train hash) of every run a selection.json chose ("chosen_runs": every seed of the
    chosen learning rate), in the file's order."""
    out: dict[tuple[str, str], None] = {}
    for m in selection.get("models", []):
        for run in m.get("chosen_runs", []) if isinstance(m, Mapping) else ():
            out[(str(m.get("model")), str(run["hash"]))] = None
    return list(out)
