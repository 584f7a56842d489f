"""An experiment folder's records of what was planned and chosen: plan.json (core.plan.Plan) and
selection.json (core.plan.Selection, written by the launcher's select stage; docs/architecture.md)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from core.atomic import CorruptFileError
from core.layout import PLAN, SELECTION
from core.plan import EvalEntry, Plan, Selection, TrainEntry

logger = logging.getLogger(__name__)

def read_plan(exp_dir: str | Path) -> Plan:
    """plan.json of an experiment (raises FileNotFoundError naming the folder when absent)."""
    exp_dir = Path(exp_dir)
    plan = Plan.read(exp_dir / PLAN)
    if plan is None:
        raise FileNotFoundError(f"{exp_dir / PLAN} does not exist: is {exp_dir} an experiment folder "
                                "(launched with `python -m sweeps.launch`)?")
    return plan


def read_selection(exp_dir: str | Path) -> Selection | None:
    """selection.json, or None before the select stage ran (or when it is damaged: logged, naming the
    file and the field)."""
    try:
        return Selection.read(Path(exp_dir) / SELECTION)
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

