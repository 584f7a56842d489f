"""An experiment folder (plan.json + run folders + selection.json) -> tidy pandas tables, saved as Parquet + CSV.

`collect` gives one row per planned evaluation (model x condition), whatever the job's state: a
failed, running or missing job is a row with its state and NaN accuracy, never an absent row, and
an unreadable result.json is reported in the row, never raised. A model whose selection chose no
learning rate (`"chosen": null` in selection.json) gets rows with state `no_model`.
`selection_table` lists every trained candidate (model x learning rate x seed) and which were chosen
(per-epoch curves: results.training).

Columns of `collect`, in order:
  experiment, model (display name from plan.json), model_hash (the training run), learning_rate;
  the model's settings, flattened from its TrainConfig: pm, num_scales, total_pool, contrast_norm,
    random_shifts, parity, num_classes (derived), seed (the replicate), factory, view (ecc/factory.py), params
    and flops (per image, from the training result), then the others alphabetically (batch_size, chevron,
    conv_kernel, crop_size, digit_height, ..., train_target_ecc, train_flanker_type, ... for the
    training run's own condition);
  flanker_type, label (a/xa/ax/xax), target_ecc, flanker_ecc (NaN for type 0), spacing
    (|flanker_ecc - target_ecc|, NaN for type 0), flanker_dset;
  n_images, n_correct (nullable Int64), accuracy (n_correct / n_images), ci_low, ci_high (95% Wilson);
  state (done/failed/running/pending/missing, or no_model), error (one line), job_id, hash (the
    evaluation run), run_dir (relative to the experiment folder), per_image (the per-image record,
    relative to the experiment folder; empty when the evaluation kept none).
Statistics over seeds and paired comparisons: results.stats; claims: results.findings.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.atomic import CorruptFileError, atomic_write, atomic_write_bytes, read_jsonl
from core.layout import METRICS, RESULT, RESULTS_CSV, RESULTS_PARQUET, SELECTION_CSV, run_dir_name
from core.plan import EvalEntry, ModelSelection, Selection, TrainEntry
from core.runs import STATES as RUN_STATES
from core.runs import JobState, read_result, read_submission, result_problem, run_state
from ecc.conditions import LABELS, condition_label, condition_spacing, num_classes

from .experiment import read_plan, read_selection, unique
from .stats import wilson_interval

logger = logging.getLogger(__name__)

NO_MODEL = "no_model"  # the selection chose no learning rate for this model: nothing to evaluate
STATES = (*RUN_STATES, NO_MODEL)

# Columns every results table has, in this order; the model's settings (flattened from its
# training config) go between MODEL_COLUMNS and CONDITION_COLUMNS.
MODEL_COLUMNS = ("experiment", "model", "model_hash", "learning_rate")
KEY_SETTINGS = ("pm", "num_scales", "total_pool", "contrast_norm", "random_shifts", "parity", "num_classes", "seed",
                "factory", "view", "params", "flops")
COST_COLUMNS = ("params", "flops")  # a network's size, from its training result (ecc.factory.cost)
CONDITION_COLUMNS = ("flanker_type", "label", "target_ecc", "flanker_ecc", "spacing", "flanker_dset")
OUTCOME_COLUMNS = ("n_images", "n_correct", "accuracy", "ci_low", "ci_high", "state", "error", "job_id",
                   "hash", "run_dir", "per_image")
FIXED_COLUMNS = (*MODEL_COLUMNS, *CONDITION_COLUMNS, *OUTCOME_COLUMNS)
# Setting names that would collide with a fixed column get a "train_" prefix (the training
# run's own condition: train_target_ecc, train_flanker_type, ...). learning_rate is the model's.
RESERVED = frozenset(FIXED_COLUMNS) - {"learning_rate"}

SELECTION_COLUMNS = ("experiment", "model", "learning_rate", "seed", "chosen", "state", "train/loss", "train/acc",
                     "val/loss", "val/acc", "best_val/acc", "diverged", "best_epoch", "epochs", "wall_time_s",
                     "params", "flops", "error",
                     "hash", "run_dir")
# A training diverged when its final val/acc fell this far below its best epoch's: evaluation uses the
# final weights (as the original), so such a run's findings are not the network it once was (issue 21:
# lr 0.1 at paper scale, val/acc 0.99 at epoch 11, 0.19 at epoch 13).
DIVERGED_DROP = 0.2


def diverged(best: float, final: float) -> bool:
    """Whether a training's final val/acc fell more than DIVERGED_DROP below its best."""
    return bool(math.isfinite(best) and math.isfinite(final) and best - final > DIVERGED_DROP)


def best_val_acc(run_dir: Path) -> float:
    """The highest val/acc over a training run's epochs (metrics.jsonl); NaN when none can be read."""
    try:
        values = [_float(r.get("val/acc")) for r in read_jsonl(run_dir / METRICS)]
    except CorruptFileError:
        return math.nan
    values = [v for v in values if math.isfinite(v)]
    return max(values) if values else math.nan
_STATE_RANK = {"done": 0, "running": 1, "pending": 2, "failed": 3, "missing": 4, NO_MODEL: 5}


# ----------------------------------------------------------------------------- small pure helpers
def _isnan(x: Any) -> bool:
    if x is None:
        return True
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return False


def _float(x: Any) -> float:
    """A JSON number (or "inf"/"nan" as core.identity writes them, or null) as a float."""
    try:
        return math.nan if x is None else float(x)
    except (TypeError, ValueError):
        return math.nan


def _json_value(x: Any) -> Any:
    """Config leaf -> a table cell: non-finite floats written as strings come back as floats."""
    if isinstance(x, str) and x in ("inf", "-inf", "nan"):
        return float(x)
    if isinstance(x, (list, tuple, dict)):
        return json.dumps(x, sort_keys=True)
    return x


def flatten_settings(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """A (nested) training config as flat, readable columns.

    Leaves keep their own name (pm, total_pool, num_scales, contrast_norm, ...) unless two leaves
    share it or it names a results column: then the path is kept ("model_x", "stimulus_x"), and a
    top-level field becomes "train_<name>" (the training condition: train_target_ecc, ...)."""
    leaves: list[tuple[tuple[str, ...], Any]] = []

    def walk(node: Mapping[str, Any], path: tuple[str, ...]) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, (*path, str(key)))
            else:
                leaves.append(((*path, str(key)), value))

    walk(config or {}, ())
    counts: dict[str, int] = {}
    for path, _ in leaves:
        counts[path[-1]] = counts.get(path[-1], 0) + 1
    out: dict[str, Any] = {}
    for path, value in leaves:
        name = path[-1]
        if counts[name] > 1 or name in RESERVED:
            name = "_".join(path) if len(path) > 1 else f"train_{name}"
        if name in out or name in RESERVED:
            name = "_".join(("train", *path))
        out[name] = _json_value(value)
    if "parity" in out:
        out["num_classes"] = num_classes(out["parity"])
    return out


def network_cost(train_dir: Path | None) -> dict[str, float]:
    """A training run's parameters and forward FLOPs per image (NaN until it is trained)."""
    result = read_result(train_dir, "train") if train_dir is not None and train_dir.is_dir() else None
    return {k: _float((result or {}).get(k)) for k in COST_COLUMNS}


# ----------------------------------------------------------------------------- the results table
def collect(exp_dir: str | Path, scheduler: Mapping[str, JobState] | None = None) -> pd.DataFrame:
    """One row per planned evaluation job (model x condition) of the experiment in `exp_dir`.

    `scheduler` maps job ids to scheduler states (as for `core.runs.run_state`); without it
    a submitted job with no result reads as pending. Columns: see FIXED_COLUMNS and the module
    docstring; the model's flattened settings sit between the model and condition columns."""
    exp_dir = Path(exp_dir)
    plan = read_plan(exp_dir)
    trains = {e.hash: e for e in unique(plan.train)}
    settings_cache: dict[str, dict[str, Any]] = {}

    def settings(model_hash: str) -> dict[str, Any]:
        if model_hash not in settings_cache:
            train = trains.get(model_hash)
            settings_cache[model_hash] = {**flatten_settings(train.config if train else {}),
                                          **network_cost(exp_dir / train.dir if train else None)}
        return settings_cache[model_hash]

    unselected = (read_selection(exp_dir) or Selection()).unselected()

    rows: list[dict[str, Any]] = []
    for entry in unique(plan.eval):
        row = _condition_row(entry.condition)
        row.update(experiment=plan.experiment, model=entry.model, model_hash=entry.model_hash, hash=entry.hash,
                   run_dir=entry.dir, **settings(entry.model_hash))
        row["learning_rate"] = entry.learning_rate
        row.update(_outcome(exp_dir / entry.dir, entry, scheduler))
        if row["state"] != "done" and entry.model in unselected:
            row["state"], row["error"] = NO_MODEL, _no_model_reason(unselected[entry.model])
        rows.append(row)

    evaluated = {r["model"] for r in rows}
    for model, sel in unselected.items():
        if model in evaluated:
            continue
        candidates = [e for e in trains.values() if e.model == model]
        row = _condition_row({})
        row.update(experiment=plan.experiment, model=model, model_hash="", hash="", run_dir="", job_id="",
                   state=NO_MODEL, error=_no_model_reason(sel), n_images=None, n_correct=None,
                   accuracy=math.nan, learning_rate=math.nan)
        if candidates:
            row.update({k: v for k, v in settings(candidates[0].hash).items() if k != "learning_rate"})
        rows.append(row)

    return _tidy(_dedupe(rows))


def _condition_row(cond: Mapping[str, Any]) -> dict[str, Any]:
    ftype = cond.get("flanker_type")
    ftype = None if ftype is None or _isnan(ftype) else int(ftype)
    t = _float(cond.get("target_ecc"))
    f = _float(cond.get("flanker_ecc")) if ftype else math.nan  # type 0 has no flanker
    return {"flanker_type": ftype, "label": condition_label(ftype, t, f), "target_ecc": t, "flanker_ecc": f,
            "spacing": condition_spacing(ftype, t, f),
            "flanker_dset": None if cond.get("flanker_dset") is None else str(cond["flanker_dset"])}


def _outcome(run_dir: Path, entry: EvalEntry, scheduler: Mapping[str, JobState] | None) -> dict[str, Any]:
    state = run_state(run_dir, scheduler, "eval")
    out: dict[str, Any] = {"state": state.state, "error": state.error, "job_id": state.job_id,
                           "n_images": None, "n_correct": None, "accuracy": math.nan}
    result = read_result(run_dir, "eval") if state.state == "done" else None
    if result is not None:  # valid by core.runs' one rule (numbers, record, config): nothing to re-judge here
        out["job_id"] = str((read_submission(run_dir) or {}).get("job_id", ""))
        n, k = int(result["n_images"]), int(result["n_correct"])
        out.update(n_images=n, n_correct=k, accuracy=k / n)
        if result.get("per_image"):
            out["per_image"] = f"{entry.dir}/{result['per_image']['file']}"
    elif (run_dir / RESULT).exists():
        why = result_problem(run_dir, "eval")
        if why and why not in out["error"]:
            out["error"] = f"{out['error']}; {why}" if out["error"] else why
    return out


def _no_model_reason(sel: ModelSelection) -> str:
    parts = []
    for c in sel.candidates:
        why = f"lr {c.learning_rate}: {c.state or '?'}"
        if c.error:
            why += f" ({c.error.strip().splitlines()[-1] if c.error.strip() else ''})"
        parts.append(why)
    return "selection chose no learning rate" + (": " + "; ".join(parts) if parts else "")


def _dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model run, condition): distinct plan entries for the same evaluation keep the
    most advanced state (done first), then the first listed."""
    best: dict[tuple[Any, ...], int] = {}
    order: list[tuple[Any, ...]] = []
    for i, row in enumerate(rows):
        if row["state"] == NO_MODEL and not row["hash"]:
            key: tuple[Any, ...] = ("no_model", row["model"])
        else:
            key = (row["model_hash"], row["flanker_type"], _key(row["target_ecc"]), _key(row["flanker_ecc"]),
                   row["flanker_dset"])
        if key not in best:
            best[key] = i
            order.append(key)
        else:
            j = best[key]
            logger.warning("plan.json lists the evaluation %s twice (runs %s and %s); keeping one",
                           key, rows[j]["hash"], row["hash"])
            if _STATE_RANK.get(row["state"], 9) < _STATE_RANK.get(rows[j]["state"], 9):
                best[key] = i
    return [rows[best[k]] for k in order]


def _key(x: float) -> float | None:
    return None if _isnan(x) else round(float(x), 6)


def _tidy(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> a DataFrame with the fixed columns in order, stable dtypes and the Wilson interval."""
    df = pd.DataFrame(rows)
    for col in FIXED_COLUMNS:
        if col not in df.columns:
            df[col] = None
    settings = [c for c in df.columns if c not in FIXED_COLUMNS]
    settings = [c for c in KEY_SETTINGS if c in settings] + sorted(c for c in settings if c not in KEY_SETTINGS)
    df = df[[*MODEL_COLUMNS, *settings, *CONDITION_COLUMNS, *OUTCOME_COLUMNS]]
    for col in ("flanker_type", "n_images", "n_correct"):
        df[col] = pd.array([None if _isnan(v) else int(v) for v in df[col]], dtype="Int64")
    for col in ("learning_rate", "target_ecc", "flanker_ecc", "spacing", "accuracy"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    lo, hi = wilson_interval(df["n_correct"].astype("Float64").to_numpy(dtype=float, na_value=np.nan),
                             df["n_images"].astype("Float64").to_numpy(dtype=float, na_value=np.nan))
    df["ci_low"], df["ci_high"] = lo, hi
    for col in ("experiment", "model", "model_hash", "label", "state", "error", "job_id", "hash", "run_dir",
                "per_image"):
        df[col] = df[col].fillna("").astype(str)
    _uniform_object_columns(df)
    sort = ["model", "learning_rate", *(["seed"] if "seed" in df.columns else []), "flanker_dset", "flanker_type",
            "target_ecc", "flanker_ecc"]
    return df.sort_values(sort, na_position="last", kind="stable").reset_index(drop=True)


def _uniform_object_columns(df: pd.DataFrame) -> None:
    """Parquet needs one type per column: a settings column mixing types is stored as text."""
    for col in df.columns:
        if df[col].dtype != object:
            continue
        kinds = {type(v) for v in df[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if len(kinds) > 1 and not kinds <= {int, float}:
            df[col] = [None if v is None else str(v) for v in df[col]]
        elif kinds <= {int, float} and kinds:
            df[col] = pd.to_numeric(df[col], errors="coerce")


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per model and configuration label: jobs planned, jobs in each state, mean accuracy of the done ones."""
    if table.empty:
        return pd.DataFrame()
    t = table.assign(label=table["label"].replace("", "-"))
    counts = pd.crosstab([t["model"], t["label"]], t["state"])
    counts = counts[[s for s in STATES if s in counts.columns]]
    counts.insert(0, "planned", counts.sum(axis=1))
    acc = t.groupby(["model", "label"])["accuracy"].agg(["mean", "min", "max"])
    out = counts.join(acc.rename(columns=lambda c: f"accuracy_{c}"))
    order = {lab: i for i, lab in enumerate((*LABELS, "-"))}
    return out.sort_index(key=lambda idx: idx.map(order) if idx.name == "label" else idx)


# ----------------------------------------------------------------------------- training and selection
def selection_table(exp_dir: str | Path, scheduler: Mapping[str, JobState] | None = None) -> pd.DataFrame:
    """Every trained candidate (model x learning rate x seed): its final metrics, current state, and
    whether the selection chose it (with replicates, every seed of the chosen learning rate). Built
    from plan.json's training jobs and their folders, completed by selection.json (which may list
    candidates the plan does not). The rule is in `.attrs["rule"]`."""
    exp_dir = Path(exp_dir)
    plan = read_plan(exp_dir)
    selection = read_selection(exp_dir) or Selection()
    chosen = selection.chosen_runs()
    candidates = selection.candidates()

    entries = unique(plan.train)
    known = {e.hash for e in entries}
    # The selection's candidates the plan no longer lists: their folders are named by their hash.
    entries += [TrainEntry(h, run_dir_name("train", h), model, c.seed, c.learning_rate, {})
                for h, (model, c) in candidates.items() if h not in known]
    rows = []
    for entry in entries:
        state = run_state(exp_dir / entry.dir, scheduler, "train")
        result = read_result(exp_dir / entry.dir, "train") if state.state == "done" else None
        final = result.get("final", {}) if result and isinstance(result.get("final"), Mapping) else {}
        cand = candidates.get(entry.hash, ("", None))[1]
        known_then = {**cand.metrics, "best_epoch": cand.best_epoch} if cand else {}  # as the select stage saw it
        row = {"experiment": plan.experiment, "model": entry.model, "learning_rate": entry.learning_rate,
               "seed": entry.seed, "chosen": (entry.model, entry.hash) in chosen, "state": state.state,
               "error": state.error or (cand.error if cand else ""), "hash": entry.hash, "run_dir": entry.dir}
        for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
            row[key] = _float(final.get(key, known_then.get(key)))
        for key in ("best_epoch", "epochs", "wall_time_s", *COST_COLUMNS):
            row[key] = _float((result or {}).get(key, known_then.get(key)))
        row["best_val/acc"] = best_val_acc(exp_dir / entry.dir) if state.state == "done" else math.nan
        row["diverged"] = diverged(row["best_val/acc"], row["val/acc"])
        rows.append(row)
    df = pd.DataFrame(rows, columns=list(SELECTION_COLUMNS))
    for col in ("best_epoch", "epochs"):
        df[col] = pd.array([None if _isnan(v) else int(v) for v in df[col]], dtype="Int64")
    df["chosen"], df["diverged"] = df["chosen"].astype(bool), df["diverged"].astype(bool)
    df = df.sort_values(["model", "learning_rate", "seed"], kind="stable").reset_index(drop=True)
    df.attrs["rule"] = selection.rule
    return df


# ----------------------------------------------------------------------------- files beside the experiment
def save(exp_dir: str | Path, table: pd.DataFrame | None = None, selection: pd.DataFrame | None = None,
         scheduler: Mapping[str, JobState] | None = None) -> list[Path]:
    """Write results.parquet, results.csv and selection.csv atomically in `exp_dir` (collecting the
    tables first when not given). Returns the paths written."""
    exp_dir = Path(exp_dir)
    table = collect(exp_dir, scheduler) if table is None else table
    selection = selection_table(exp_dir, scheduler) if selection is None else selection
    return [
        atomic_write(exp_dir / RESULTS_PARQUET, lambda f: table.to_parquet(f, index=False)),
        atomic_write_bytes(exp_dir / RESULTS_CSV, table.to_csv(index=False).encode()),
        atomic_write_bytes(exp_dir / SELECTION_CSV, selection.to_csv(index=False).encode()),
    ]


def load(exp_dir: str | Path) -> pd.DataFrame:
    """The results table saved by `save` (results.parquet)."""
    path = Path(exp_dir) / RESULTS_PARQUET
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run results.table.save({str(exp_dir)!r}) "
                                "(or the launcher's collect stage) first")
    return pd.read_parquet(path)


def load_selection(exp_dir: str | Path) -> pd.DataFrame:
    """The selection table saved by `save` (selection.csv)."""
    return pd.read_csv(Path(exp_dir) / SELECTION_CSV)
