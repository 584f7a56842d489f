"""Training: the resumable and signal-safe train() job body, and `python -m ecc.train`.

A run folder holds config.json (written first), metrics.jsonl (one line per epoch),
checkpoint.pt (model, optimizer, position in the epoch; rewritten atomically every
`checkpoint_every` steps, at every epoch end and when SIGUSR2/SIGTERM arrive: ecc/checkpoint.py)
and finally result.json. A restarted run continues from its checkpoint and, on the CPU, ends with
bitwise the same weights as an uninterrupted one: epoch e visits the images in the order of
`np.random.default_rng([seed, epoch])`, so the order does not depend on where a run stopped.
Nothing in a run folder is ever deleted; an unreadable checkpoint is renamed and reported.
What a run computes is its TrainConfig, how it runs its RunOptions (ecc/config.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from core.atomic import CorruptFileError, append_jsonl, atomic_write_json
from core.cli import Parser, add_arguments, from_namespace
from core.identity import to_jsonable
from core.layout import CHECKPOINT, METRICS, PROGRESS, RESULT
from core.runs import read_result, write_result

from . import datasets
from .checkpoint import resume, save_checkpoint, sync_metrics
from .config import RunOptions, TrainConfig, claim_folder
from .evaluate import evaluate_set
from .factory import cost
from .model import build
from .runtime import DeferredSignals, apply_malloc_env, apply_run_options, resolve_device
from .sources import SourceConfig
from .stimuli import normalize

logger = logging.getLogger(__name__)

METRIC_KEYS = ("train/loss", "train/acc", "val/loss", "val/acc")


# -------------------------------------------------------------------------------- batches
class _Images:
    """uint8 images for the model: all on the GPU when they fit, else read per batch from the
    (memory-mapped) array."""

    def __init__(self, data: datasets.StimulusSet, device: torch.device) -> None:
        self.n = len(data.labels)
        self.device = device
        self.labels = torch.as_tensor(np.asarray(data.labels), dtype=torch.int64).to(device)
        self.host = data.images
        self.resident: torch.Tensor | None = None
        if device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(device)
            if data.images.nbytes < free // 4:
                self.resident = torch.from_numpy(np.ascontiguousarray(data.images)).to(device)

    def batch(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 (B, S, C, C), int64 (B,)) on the device, for sorted indices."""
        idx = torch.from_numpy(index)
        if self.resident is not None:
            idx = idx.to(self.device, non_blocking=True)
            return self.resident[idx], self.labels[idx]
        x = torch.from_numpy(np.ascontiguousarray(self.host[index])).to(self.device, non_blocking=True)
        return x, self.labels[idx.to(self.device)]


# -------------------------------------------------------------------------------- progress
class _Progress:
    """A tqdm bar on a terminal, else a line every `interval` seconds; epoch summaries either way.

    A job's log is never a terminal, so it gets the lines: step, epoch, images/s, latest val/acc.
    The same figures go to `path` (the run's progress.json, atomically), where a launcher's
    --status reads them without touching the checkpoint."""

    def __init__(self, enabled: bool, interval: float, total: int, initial: int,
                 path: Path | None = None) -> None:
        self.enabled, self.interval, self.total, self.path = enabled, interval, total, path
        self.bar = None
        self.last = time.monotonic()
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def update(self) -> bool:
        """Count one step; True when a status text is due (so it is only computed then)."""
        if self.bar is not None:
            self.bar.update(1)
            return time.monotonic() - self.last > 1.0
        return (self.enabled or self.path is not None) and time.monotonic() - self.last >= self.interval

    def status(self, step: int, epoch: int, num_epochs: int, text: str, images_per_s: float,
               val_acc: float | None) -> None:
        """A status line: `step 120/900 epoch 1/8 loss 2.1 acc 0.31, 512 img/s, last val/acc 0.42`."""
        self.record(step=step, epoch=epoch, num_epochs=num_epochs, images_per_s=images_per_s, val_acc=val_acc)
        full = (f"epoch {epoch}/{num_epochs} {text}, {images_per_s:.0f} img/s, last val/acc "
                + ("-" if val_acc is None else f"{val_acc:.4f}"))
        if self.bar is not None:
            self.bar.set_postfix_str(full, refresh=False)
        elif self.enabled:
            print(f"step {step}/{self.total} {full}", flush=True)
        self.last = time.monotonic()

    def record(self, *, step: int, epoch: int, num_epochs: int, images_per_s: float, val_acc: float | None) -> None:
        if self.path is not None:
            atomic_write_json(self.path, {"step": step, "total_steps": self.total, "epoch": epoch,
                                          "num_epochs": num_epochs, "images_per_s": images_per_s,
                                          "val/acc": val_acc, "time": time.time()})

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        elif self.enabled:
            print(text, flush=True)
        else:
            logger.info(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -------------------------------------------------------------------------------- train
def _new_model(cfg: TrainConfig, device: torch.device, bf16: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The run's untrained model (initial weights from cfg.seed) on `device`, and its optimizer."""
    model = build(cfg.model, cfg.stimulus.crop_size, seed=cfg.seed, bf16=bf16,
                  num_scales=cfg.stimulus.num_scales).to(device)
    # TensorFlow's Adagrad starts its accumulator at 0.1 (PyTorch's default is 0); no weight decay.
    optimizer = torch.optim.Adagrad(model.parameters(), lr=cfg.learning_rate, initial_accumulator_value=0.1)
    return model, optimizer


def best_epoch(metrics: list[dict[str, Any]]) -> int:
    """Epoch (1-based) with the highest val/acc, ties broken by the lowest val/loss, then the earliest."""
    best = min(metrics, key=lambda m: (-m["val/acc"], m["val/loss"], m["epoch"]))
    return int(best["epoch"])


def train(cfg: TrainConfig, run_dir: str | os.PathLike, *, data_root: str | os.PathLike,
          source: SourceConfig | None = None, options: RunOptions = RunOptions(),
          on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train one run in `run_dir` (resuming from its checkpoint) and return its result.

    Datasets are built under `data_root` (once, shared by runs). A finished run returns its
    result.json again without training. `on_step(step)` is called after every optimizer step
    (tests use it to interrupt a run at a given step)."""
    t_call = time.time()
    run_dir = Path(run_dir)
    done = _finished(cfg, run_dir)
    if done is not None:
        return done
    device = apply_run_options(options)
    images, val_set = _load_data(cfg, data_root, source, options, device)
    per_epoch = math.ceil(images.n / cfg.batch_size)
    run = _Run.resume(cfg, run_dir, device, options, t_call, total_steps=per_epoch * cfg.num_epochs)
    run.model.train()
    try:
        with DeferredSignals() as signals:
            while run.state["epoch"] < cfg.num_epochs:
                t_epoch = time.perf_counter() - run.state["epoch_time_s"]
                for b, index in _batches(cfg, images.n, run.state["epoch"], run.state["batch"]):
                    x, y = images.batch(index)
                    loss, logits = _train_step(run.model, run.optimizer, cfg, x, y)
                    run.count_step(b, loss, logits, y, t_epoch)
                    if on_step is not None:
                        on_step(run.state["step"])
                    run.report_progress()
                    last = b + 1 == per_epoch  # the epoch-end checkpoint follows validation
                    if signals.pending is not None and not last:
                        run.checkpoint()
                        signals.forward()
                    elif options.checkpoint_every and run.state["step"] % options.checkpoint_every == 0 and not last:
                        run.checkpoint()
                run.end_epoch(val_set, time.perf_counter() - t_epoch)
                if signals.pending is not None:
                    signals.forward()
    finally:
        run.progress.close()
    result = run.result(n_train_images=images.n, n_validation_images=len(val_set.labels),
                        **cost(run.model, cfg.stimulus.shape))  # params, forward FLOPs per image
    write_result(run_dir, result)  # the one writer of result.json (core.runs): clears an older error.json
    return result


def _finished(cfg: TrainConfig, run_dir: Path) -> dict[str, Any] | None:
    """The run's result when it is already trained (the folder is claimed for this run first)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    claim_folder(run_dir, cfg)
    try:
        done = read_result(run_dir, "train")
    except CorruptFileError as e:
        logger.warning("ignoring an unreadable result (%s); training again", e)
        return None
    if done is not None and done["hash"] == cfg.hash:
        logger.info("%s is already trained", run_dir)
        return done
    return None


def _load_data(cfg: TrainConfig, data_root: str | os.PathLike, source: SourceConfig | None, options: RunOptions,
               device: torch.device) -> tuple[_Images, datasets.StimulusSet]:
    """The training images (as batches) and the validation set, built under `data_root` once."""
    bars = options.progress and sys.stderr.isatty()  # in a job's log a bar is thousands of carriage returns
    train_set = datasets.load(cfg.train_spec(), data_root, source, progress=bars, device=device)
    val_set = datasets.load(cfg.validation_spec(), data_root, source, progress=bars, device=device)
    return _Images(train_set, device), val_set


def _batches(cfg: TrainConfig, n: int, epoch: int, start: int) -> Iterator[tuple[int, np.ndarray]]:
    """(batch number, sorted image indices) of an epoch from batch `start` on: the epoch's order is
    `default_rng([seed, epoch])`, whatever batch a resumed run starts at."""
    order = np.random.default_rng([cfg.seed, epoch]).permutation(n)
    for b in range(start, math.ceil(n / cfg.batch_size)):
        yield b, np.sort(order[b * cfg.batch_size:(b + 1) * cfg.batch_size])


def _train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig, x: torch.Tensor,
                y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch; returns its loss and logits (B, classes), detached."""
    logits = model(normalize(x, cfg.contrast_norm, cfg.stimulus))  # (B, classes)
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach()


@dataclass
class _Run:
    """A training between steps: model, optimizer, the checkpointed state (position, metrics, times)
    and the running sums of the epoch so far."""

    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    state: dict[str, Any]
    progress: _Progress
    t_call: float
    loss_sum: torch.Tensor = field(init=False)
    correct: torch.Tensor = field(init=False)
    count: int = field(init=False)

    def __post_init__(self) -> None:
        sums = self.state["sums"]
        self.wall_before = self.state["wall_time_s"]
        self.loss_sum = torch.tensor(sums["loss"], dtype=torch.float64, device=self.device)
        self.correct = torch.tensor(sums["correct"], dtype=torch.int64, device=self.device)
        self.count = int(sums["count"])

    @classmethod
    def resume(cls, cfg: TrainConfig, run_dir: Path, device: torch.device, options: RunOptions, t_call: float,
               *, total_steps: int) -> _Run:
        """From the run's checkpoint, or a new model (initial weights from cfg.seed)."""
        bf16 = options.precision == "bf16"
        model, optimizer, state = resume(run_dir / CHECKPOINT, cfg.hash, lambda: _new_model(cfg, device, bf16), device)
        sync_metrics(run_dir / METRICS, state["metrics"])
        progress = _Progress(options.progress, options.progress_interval, total_steps, state["step"],
                             run_dir / PROGRESS)
        return cls(cfg, run_dir, device, model, optimizer, state, progress, t_call)

    def count_step(self, b: int, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, t_epoch: float) -> None:
        """Add a step's loss and hits to the epoch's sums, and move the position on."""
        n = len(y)
        self.loss_sum += loss.double() * n
        self.correct += (logits.argmax(1) == y).sum()
        self.count += n
        self.state["batch"], self.state["step"] = b + 1, self.state["step"] + 1
        self.state["epoch_time_s"] = time.perf_counter() - t_epoch

    def report_progress(self) -> None:
        if self.progress.update():
            metrics = self.state["metrics"]
            self.progress.status(self.state["step"], self.state["epoch"] + 1, self.cfg.num_epochs,
                                 f"loss {self.loss_sum.item() / self.count:.4f} acc {self.correct.item() / self.count:.3f}",
                                 self.count / max(self.state["epoch_time_s"], 1e-9),
                                 metrics[-1]["val/acc"] if metrics else None)

    def checkpoint(self) -> None:
        self.state["sums"] = {"loss": float(self.loss_sum.item()), "correct": int(self.correct.item()),
                              "count": self.count}
        self.state["wall_time_s"] = self.wall_before + time.time() - self.t_call
        save_checkpoint(self.run_dir / CHECKPOINT, {**self.state, "model": self.model.state_dict(),
                                                    "optimizer": self.optimizer.state_dict()})

    def end_epoch(self, val_set: datasets.StimulusSet, train_time: float) -> None:
        """Validation, the epoch's metrics (metrics.jsonl, progress.json, one log line), a checkpoint."""
        cfg, state, epoch = self.cfg, self.state, self.state["epoch"]
        val_loss, val_correct, val_n = evaluate_set(self.model, val_set.images, val_set.labels, cfg.contrast_norm,
                                                    cfg.stimulus, self.device, cfg.batch_size)
        record = {"epoch": epoch + 1, "step": state["step"], "train/loss": float(self.loss_sum.item()) / self.count,
                  "train/acc": int(self.correct.item()) / self.count, "val/loss": val_loss / val_n,
                  "val/acc": val_correct / val_n, "images_per_s": self.count / max(train_time, 1e-9),
                  "time": round(self.wall_before + time.time() - self.t_call, 3)}  # seconds since the run began
        state["metrics"].append(record)
        state["train_time_s"] += train_time
        state["images"] += self.count
        state["epoch"], state["batch"], state["epoch_time_s"] = epoch + 1, 0, 0.0
        self.loss_sum.zero_()
        self.correct.zero_()
        self.count = 0
        self.checkpoint()
        append_jsonl(self.run_dir / METRICS, record)
        self.progress.record(step=state["step"], epoch=epoch + 1, num_epochs=cfg.num_epochs,
                             images_per_s=record["images_per_s"], val_acc=record["val/acc"])
        self.progress.line(
            f"epoch {epoch + 1}/{cfg.num_epochs} step {state['step']}: train/loss {record['train/loss']:.4f} "
            f"train/acc {record['train/acc']:.4f} val/loss {record['val/loss']:.4f} "
            f"val/acc {record['val/acc']:.4f} ({record['images_per_s']:.0f} img/s)")

    def result(self, **extra: Any) -> dict[str, Any]:
        final = self.state["metrics"][-1]
        return {
            "kind": "train", "hash": self.cfg.hash, "config": to_jsonable(self.cfg),
            "final": {k: final[k] for k in METRIC_KEYS},
            "best_epoch": best_epoch(self.state["metrics"]), "epochs": self.cfg.num_epochs,
            "steps": self.state["step"], "wall_time_s": round(self.wall_before + time.time() - self.t_call, 3),
            "device": str(self.device), "images_per_s": self.state["images"] / max(self.state["train_time_s"], 1e-9),
            **extra,
        }


# -------------------------------------------------------------------------------- CLI
@dataclass(frozen=True)
class TrainArgs:
    """Train the eccentricity-dependent model (the original's ecc_train.py). The run folder is
    TRAIN_DIR/trained/MODEL_NAME; the stimuli are generated once into TRAIN_DIR/data."""

    config: TrainConfig = field(default_factory=TrainConfig)  # what to train
    options: RunOptions = field(default_factory=RunOptions)  # how to run
    source: SourceConfig = field(default_factory=SourceConfig)  # where the images come from


@contextlib.contextmanager
def _console_logging() -> Iterator[None]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    yield


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m ecc.train", description=TrainArgs.__doc__)
    add_arguments(parser, TrainArgs)
    ns = parser.parse_args(argv)
    try:
        args: TrainArgs = from_namespace(TrainArgs, ns)
        cfg, options = args.config, args.options
        train_dir = Path(options.train_dir)
        run_dir = train_dir / "trained" / (options.model_name or cfg.hash)
        resolve_device(options.device)
        claim_folder(run_dir, cfg)  # refuses a folder holding another run
    except ValueError as e:
        parser.error(str(e))
    with _console_logging():
        if resolve_device(options.device).type == "cpu":
            apply_malloc_env()
        print(f"run {cfg.hash} -> {run_dir}", flush=True)
        result = train(cfg, run_dir, data_root=train_dir / "data", source=args.source, options=options)
    final = result["final"]
    print(f"done: train/acc {final['train/acc']:.4f} val/acc {final['val/acc']:.4f} "
          f"(best epoch {result['best_epoch']}) in {result['wall_time_s']:.1f} s; {run_dir / RESULT}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
