"""Checkpoints of a training run: save and load (atomic, tensors only), resume, the final weights.

checkpoint.pt holds the model, the optimizer and the position in the run (epoch, batch within it,
step, the epoch's running sums, every finished epoch's metrics, times). It is rewritten
atomically, so a reader sees the previous checkpoint or the new one, never a torn file; one that
cannot be used is renamed and reported, never deleted.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.atomic import CorruptFileError, append_jsonl, atomic_write, check_keys, read_jsonl
from core.identity import to_jsonable
from core.layout import CHECKPOINT

from .config import read_config

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
CHECKPOINT_KEYS = ("format", "hash", "model", "optimizer", "epoch", "batch", "step", "sums", "metrics",
                   "wall_time_s", "train_time_s", "epoch_time_s", "images")


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Write a checkpoint atomically: readers see the previous one or this one, never a torn file."""
    atomic_write(path, lambda f: torch.save(dict(state), f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The checkpoint, or None when there is none. Raises CorruptFileError when it cannot be read
    (truncated, not a checkpoint, objects other than tensors and plain values) or lacks keys."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many kinds (RuntimeError, UnpicklingError, EOFError, ...)
        raise CorruptFileError(f"{path} cannot be read: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if not isinstance(ckpt, dict):
        raise CorruptFileError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint")
    check_keys(path, ckpt, CHECKPOINT_KEYS)
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise CorruptFileError(f"{path} has checkpoint format {ckpt['format']!r}, expected {CHECKPOINT_FORMAT}")
    return ckpt


def _set_aside(path: Path, why: str) -> Path:
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(path, aside)
    logger.warning("%s; moved it to %s and starting this run from scratch", why, aside.name)
    return aside


def _fresh_state(run_hash: str) -> dict[str, Any]:
    """The progress of a run that has not started: epoch 0, batch 0, no metrics."""
    return {"format": CHECKPOINT_FORMAT, "hash": run_hash, "epoch": 0, "batch": 0, "step": 0,
            "sums": {"loss": 0.0, "correct": 0, "count": 0}, "metrics": [], "wall_time_s": 0.0,
            "train_time_s": 0.0, "epoch_time_s": 0.0, "images": 0}


def resume(path: Path, run_hash: str, new: Callable[[], tuple[nn.Module, torch.optim.Optimizer]],
           map_location: str | torch.device = "cpu") -> tuple[nn.Module, torch.optim.Optimizer, dict[str, Any]]:
    """Model, optimizer and progress from the checkpoint of run `run_hash`, or fresh ones (`new()`,
    _fresh_state) when there is none; an unusable one (unreadable, another run's, another model's)
    is set aside and the run starts from scratch."""
    try:
        ckpt = load_checkpoint(path, map_location=map_location)
        if ckpt is not None:
            if ckpt["hash"] != run_hash:
                raise CorruptFileError(f"{path} belongs to run {ckpt['hash']!r}, not {run_hash}")
            model, optimizer = new()
            try:
                model.load_state_dict(ckpt["model"])
                optimizer.load_state_dict(ckpt["optimizer"])
            except (RuntimeError, ValueError, KeyError, TypeError) as e:
                raise CorruptFileError(f"{path} does not fit this model: {str(e).splitlines()[0]}") from e
            state = {k: ckpt[k] for k in CHECKPOINT_KEYS if k not in ("model", "optimizer")}
            logger.info("resuming %s from epoch %d, batch %d (step %d)", path.parent, state["epoch"] + 1,
                        state["batch"], state["step"])
            return model, optimizer, state
    except CorruptFileError as e:
        _set_aside(path, str(e))
    model, optimizer = new()
    return model, optimizer, _fresh_state(run_hash)


def sync_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    """Make metrics.jsonl hold exactly the checkpoint's epochs: append the ones a crash kept from
    being written; if it holds others (a checkpoint was lost), set it aside and rewrite it."""
    have = read_jsonl(path)
    if have == records[:len(have)]:
        for rec in records[len(have):]:
            append_jsonl(path, rec)
        return
    aside = path.with_name(f"{path.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(path, aside)
    logger.warning("%s did not match the checkpoint; moved it to %s", path, aside.name)
    text = "".join(json.dumps(to_jsonable(r), sort_keys=True) + "\n" for r in records)
    atomic_write(path, lambda f: f.write(text.encode()))


def final_weights(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The trained model's state dict, from the final checkpoint of a finished run."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    ckpt = load_checkpoint(run_dir / CHECKPOINT, map_location=map_location)
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir / CHECKPOINT} does not exist: the run has no weights")
    if ckpt["hash"] != cfg.hash:
        raise CorruptFileError(f"{run_dir / CHECKPOINT} belongs to run {ckpt['hash']!r}, not {cfg.hash}")
    if ckpt["epoch"] != cfg.num_epochs:
        raise ValueError(f"{run_dir} has trained {ckpt['epoch']} of {cfg.num_epochs} epochs; finish it first")
    return ckpt["model"]
