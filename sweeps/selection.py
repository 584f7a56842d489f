"""The select stage: per model, the learning rate(s) the sweep's rule chooses from the training runs'
recorded metrics (sweeps.spec.choose), written to selection.json with every candidate; and the
selection an earlier launch made (for --status and for the plan before this launch selects)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from core.layout import SELECTION
from core.plan import Candidate, ChosenRun, ModelSelection, Score, Selection
from core.runs import RunState, read_result
from results.experiment import read_selection

from .spec import SweepSpec, TrainRun, choose
from .stages import Unit

Selected = tuple[str, str, float]  # (model, train hash, learning rate)
METRICS = ("train/loss", "train/acc", "val/loss", "val/acc")


def select(spec: SweepSpec, exp: Path, units: Sequence[Unit], states: Mapping[Path, RunState],
           echo: Callable[[str], None] = print) -> list[Selected]:
    """The runs to evaluate: per model, every finished seed of the learning rate(s) the rule chooses on
    the mean over seeds. Writes selection.json and says what it chose, and among what, per model."""
    models, selected = [], []
    for name, _ in spec.models:
        candidates = []
        for u in units:
            run: TrainRun = u.payload
            if run.model != name:
                continue
            result = read_result(u.run_dir, "train") or {}
            final = result.get("final", {})
            candidates.append({"hash": run.hash, "learning_rate": run.config.learning_rate, "seed": run.seed,
                               "state": states[u.run_dir].state, "error": states[u.run_dir].error,
                               **{k: final.get(k) for k in METRICS}, "best_epoch": result.get("best_epoch")})
        lrs, scores = choose(spec.selection, candidates)
        chosen = [c for c in candidates if c["learning_rate"] in lrs and c["state"] == "done"]
        models.append(ModelSelection(
            name, chosen[0]["hash"] if chosen else None, lrs[0] if len(lrs) == 1 else None, tuple(lrs),
            tuple(ChosenRun(c["hash"], c["learning_rate"], c["seed"]) for c in chosen),
            tuple(Score(sc["learning_rate"], tuple(sc["seeds_done"]), _metrics(sc)) for sc in scores),
            tuple(Candidate(c["hash"], c["learning_rate"], c["seed"], c["state"], c["error"], c["best_epoch"],
                            _metrics(c)) for c in candidates)))
        selected += [(name, c["hash"], c["learning_rate"]) for c in chosen]
        echo(_line(spec, name, lrs, scores, candidates, chosen))
    Selection(tuple(models), rule=spec.rule_text, rule_name=spec.selection, seeds=tuple(spec.seeds),
              scope="a learning rate is scored on the mean of its seeds' final metrics; every seed of the "
                    "chosen learning rate is evaluated").write(exp / SELECTION)
    return selected


def earlier_selection(spec: SweepSpec, exp: Path) -> list[Selected]:
    """What the last select stage chose (selection.json), for the training runs this sweep still has."""
    runs = {(r.model, r.hash): r.config.learning_rate for r in spec.train_runs()}
    chosen = (read_selection(exp) or Selection()).chosen_runs()
    return [(model, h, runs[model, h]) for model, h in chosen if (model, h) in runs]


def _metrics(scored: Mapping[str, Any]) -> dict[str, Any]:
    """The namespaced metrics (train/loss, val/acc, ...) of a candidate or a score."""
    return {k: v for k, v in scored.items() if "/" in k}


def _line(spec: SweepSpec, name: str, lrs: Sequence[float], scores: Sequence[Mapping[str, Any]],
          candidates: Sequence[Mapping[str, Any]], chosen: Sequence[Mapping[str, Any]]) -> str:
    """`[select] model: lr=0.01 (val/acc 0.9, val/loss 0.3) among lr=0.1: 0.8, lr=0.01: 0.9`."""
    if not chosen:
        return f"[select] {name}: no finished training run; it is not evaluated"
    metric = "train/loss" if spec.selection == "train/loss" else "val/acc"
    by_lr = {sc["learning_rate"]: sc for sc in scores}
    what = ", ".join(f"lr={lr:g}" for lr in lrs)
    if spec.selection != "all":
        best = by_lr[lrs[0]]
        what += f" ({metric} {_fmt(best[metric])}" + (f", val/loss {_fmt(best['val/loss'])}"
                                                       if metric == "val/acc" else "") + ")"
    states = {lr: ", ".join(dict.fromkeys(c["state"] for c in candidates if c["learning_rate"] == lr))
              for lr in by_lr}
    return (f"[select] {name}: {what}" + (f", seeds {[c['seed'] for c in chosen]}" if len(spec.seeds) > 1 else "")
            + " among " + ", ".join(f"lr={sc['learning_rate']:g}: "
                                    + (_fmt(sc[metric]) if sc["seeds_done"] else states[sc["learning_rate"]])
                                    for sc in scores))


def _fmt(x: Any) -> str:
    """A metric for a log line: 4 decimals, or as stored ("nan" from a diverged run, None)."""
    return f"{x:.4f}" if isinstance(x, (int, float)) else str(x)
