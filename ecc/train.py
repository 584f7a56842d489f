"""Training: TrainConfig, the resumable and signal-safe train() job body, and `python -m ecc.train`.

A run folder holds config.json (written first), metrics.jsonl (one line per epoch),
checkpoint.pt (model, optimizer, position in the epoch; rewritten atomically every
`checkpoint_every` steps, at every epoch end and when SIGUSR2/SIGTERM arrive) and finally
result.json. A restarted run continues from its checkpoint and, on the CPU, ends with bitwise the
same weights as an uninterrupted one: epoch e visits the images in the order of
`np.random.default_rng([seed, epoch])`, so the order does not depend on where a run stopped.
Nothing in a run folder is ever deleted; an unreadable checkpoint is renamed and reported.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from core.atomic import CorruptFileError, append_jsonl, atomic_write, atomic_write_json, read_json, read_jsonl
from core.cli import Parser, add_arguments, arg, from_namespace
from core.identity import config_hash, from_jsonable, to_jsonable
from core.runs import read_result, write_config

from . import datasets
from .datasets import PLACES, DatasetSpec
from .model import MALLOC_ENV, EccNet, ModelConfig
from .sources import FLANKER_DSETS, SourceConfig
from .stimuli import (
    CONTRAST_NORMS,
    FLANKER_TYPES,
    StimulusConfig,
    check_placement,
    check_shift_spacing,
    normalize,
)

logger = logging.getLogger(__name__)

CONFIG, RESULT, METRICS, CHECKPOINT = "config.json", "result.json", "metrics.jsonl", "checkpoint.pt"
PROGRESS = "progress.json"  # the latest step, epoch, images/s and val/acc of a running training
CHECKPOINT_FORMAT = 1
CHECKPOINT_KEYS = ("format", "hash", "model", "optimizer", "epoch", "batch", "step", "sums", "metrics",
                   "wall_time_s", "train_time_s", "epoch_time_s", "images")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "tf32", "bf16")
HANDLED_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)
METRIC_KEYS = ("train/loss", "train/acc", "val/loss", "val/acc")


@dataclass(frozen=True)
class TrainConfig:
    """Train the eccentricity-dependent model on multiscale MNIST stimuli (the original's ecc_train.py)."""

    stimulus: StimulusConfig = field(default_factory=StimulusConfig)  # geometry of the stimuli
    model: ModelConfig = field(default_factory=ModelConfig)  # architecture of the model
    random_shifts: bool = arg(False, "train on targets at uniformly random eccentricities over the whole field "
                              "(overrides --target_ecc; flankers keep the spacing flanker_ecc - target_ecc)")
    target_ecc: float = arg(0.0, "target eccentricity of the training images in pixels, without --random_shifts",
                            aliases=("train_ecc",))
    flanker_type: int = arg(0, "flankers in the training images: 0 none, 1 one at --flanker_ecc, "
                            "2 two (also its mirror about the target)", choices=FLANKER_TYPES)
    flanker_ecc: float = arg(0.0, "flanker eccentricity in pixels (ignored for --flanker_type 0)")
    flanker_dset: str = arg("MNIST", "flanker images: MNIST (digits of the other parity), letters (A-J from fonts), notMNIST or omniglot",
                            choices=FLANKER_DSETS)
    contrast_norm: str = arg("None", "contrast normalisation of the crops: None (x/255) or areafactor "
                             "(each crop / its max / its area factor)", choices=CONTRAST_NORMS)
    place: str = arg("None", "backgrounds: None (black) or random (a MIT Places photo per image)", choices=PLACES)
    validation_size: int = arg(5000, "the first this many MNIST training images form the validation split")
    train_images: int = arg(0, "train on at most this many images (0 = the whole training split)")
    learning_rate: float = arg(0.1, "learning rate of Adagrad")
    num_epochs: int = arg(20, "passes over the training images")
    batch_size: int = arg(128, "images per training step")
    seed: int = arg(0, "seed of the initial weights and of the image order (replicates differ in it)")
    data_seed: int | None = arg(None, "seed of the random stimulus positions of the training and validation "
                                "images; None: the same as --seed (replicates of a sweep share the positions "
                                "of data_seed 0, so they share one training dataset)")

    def __post_init__(self) -> None:
        # The nested configs checked themselves; these are the checks that need several of them.
        if self.model.num_scales != self.stimulus.num_scales:
            raise ValueError(f"pm {self.model.pm} starts with {self.model.num_scales} scales but --num_scales is "
                             f"{self.stimulus.num_scales}; the first number of pm must equal --num_scales")
        self.model.layer_shapes(self.stimulus.crop_size)  # crops large enough for every layer
        _check_choice("flanker_type", self.flanker_type, FLANKER_TYPES)
        _check_choice("flanker_dset", self.flanker_dset, FLANKER_DSETS)
        _check_choice("contrast_norm", self.contrast_norm, CONTRAST_NORMS)
        _check_choice("place", self.place, PLACES)
        for name in ("target_ecc", "flanker_ecc", "learning_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        for name, low in (("num_epochs", 1), ("batch_size", 1), ("validation_size", 1), ("train_images", 0),
                          ("seed", 0), ("data_seed", 0)):
            value = getattr(self, name)
            if name == "data_seed" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.random_shifts:
            if self.flanker_type:
                check_shift_spacing(self.stimulus, self.flanker_type, self.flanker_ecc - self.target_ecc)
        else:
            check_placement(self.stimulus, self.target_ecc, self.flanker_type,
                            self.flanker_ecc if self.flanker_type else None)
        if self.data_seed == self.seed:
            # One run, one identity: data_seed equal to seed is the default (None), so runs written
            # before data_seed existed (positions seeded by `seed`) keep their hash.
            object.__setattr__(self, "data_seed", None)
        self.dataset_spec("train")  # anything else DatasetSpec refuses

    @property
    def stimulus_seed(self) -> int:
        """The seed of the training and validation positions (data_seed, else seed)."""
        return self.seed if self.data_seed is None else self.data_seed

    @property
    def hash(self) -> str:
        """The run's identity."""
        return config_hash(self)

    def dataset_spec(self, split: str) -> DatasetSpec:
        """The stimuli of one split, placed as in training."""
        return DatasetSpec(
            split=split, stimulus=self.stimulus, parity=self.model.parity, flanker_dset=self.flanker_dset,
            random_shifts=self.random_shifts, target_ecc=float(self.target_ecc), flanker_type=self.flanker_type,
            flanker_ecc=float(self.flanker_ecc), place=self.place, seed=self.stimulus_seed,
            limit=self.train_images if split == "train" else 0, validation_size=self.validation_size)

    def train_spec(self) -> DatasetSpec:
        return self.dataset_spec("train")

    def validation_spec(self) -> DatasetSpec:
        """The whole validation split, drawn like the training images."""
        return self.dataset_spec("validation")


def _check_choice(name: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ValueError(f"{name} {value!r} is not one of {', '.join(map(str, valid))}")


@dataclass(frozen=True)
class RunOptions:
    """How a run executes; none of it changes what it computes (not part of the run identity)."""

    device: str = arg("auto", "where to compute: auto (a GPU when there is one), cpu or cuda", choices=DEVICES)
    precision: str = arg("fp32", "fp32 (full float32: TF32 off for cuDNN convolutions and matmuls), tf32 (TF32 "
                         "tensor cores on Ampere and later: faster, 10 mantissa bits, so the areafactor model's "
                         "central crops, spanning ~1/1024, keep only a few levels) or bf16 (bfloat16 autocast: "
                         "faster still, coarser); only fp32 is bitwise reproducible", choices=PRECISIONS)
    threads: int = arg(0, "CPU threads for torch (0 = torch's default)")
    checkpoint_every: int = arg(200, "steps between checkpoints (0 = only at the end of each epoch); a checkpoint "
                                "is also written at every epoch end and on SIGUSR2/SIGTERM")
    progress: bool = arg(True, "show progress: a bar on a terminal, else one line per --progress_interval")
    progress_interval: float = arg(60.0, "seconds between progress lines when not on a terminal")
    train_dir: str = arg("runs", "CLI: datasets go to TRAIN_DIR/data and the run to TRAIN_DIR/trained/MODEL_NAME")
    model_name: str = arg("", "CLI: name of the run folder under TRAIN_DIR/trained; empty: the config hash")

    def __post_init__(self) -> None:
        _check_choice("device", self.device, DEVICES)
        _check_choice("precision", self.precision, PRECISIONS)
        for name in ("threads", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.progress_interval > 0:
            raise ValueError(f"progress_interval must be > 0 seconds, got {self.progress_interval!r}")
        if self.model_name and (os.sep in self.model_name or self.model_name in (".", "..")):
            raise ValueError(f"model_name {self.model_name!r} must be a plain folder name, without {os.sep!r}")


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; refuses cuda without a GPU."""
    _check_choice("device", name, DEVICES)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch sees no GPU; use --device=cpu or auto")
    return torch.device(name)


def apply_precision(precision: str) -> None:
    """TF32 on or off for cuDNN convolutions and CUDA matmuls (process-wide). PyTorch lets cuDNN
    convolutions use TF32 by default on Ampere and later; fp32 (and bf16, whose autocast leaves
    some ops in float32) turn it off, tf32 turns it on. Harmless without a GPU."""
    _check_choice("precision", precision, PRECISIONS)
    tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32


def apply_run_options(options: RunOptions) -> torch.device:
    """Device, precision and thread settings of a job (process-wide, so only job bodies call this)."""
    if options.threads:
        torch.set_num_threads(options.threads)
    apply_precision(options.precision)
    return resolve_device(options.device)


# -------------------------------------------------------------------------------- config I/O
def read_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The TrainConfig of a run folder (from config.json)."""
    path = Path(run_dir) / CONFIG
    data = read_json(path, ("config",))
    if data is None:
        raise FileNotFoundError(f"{path} does not exist: {run_dir} is not a training run folder")
    return from_jsonable(TrainConfig, data["config"])


def _claim_folder(run_dir: Path, cfg: TrainConfig) -> None:
    """Write config.json, or check that the folder's config.json is this config's."""
    try:
        write_config(run_dir, "train", cfg.hash, cfg)
    except ValueError as e:
        raise ValueError(f"{e} (with the CLI: another --model_name)") from None


# -------------------------------------------------------------------------------- checkpoints
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
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise CorruptFileError(f"{path} lacks the keys {missing}")
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise CorruptFileError(f"{path} has checkpoint format {ckpt['format']!r}, expected {CHECKPOINT_FORMAT}")
    return ckpt


def _set_aside(path: Path, why: str) -> Path:
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(path, aside)
    logger.warning("%s; moved it to %s and starting this run from scratch", why, aside.name)
    return aside


# -------------------------------------------------------------------------------- signals
class DeferredSignals:
    """While active, SIGUSR2 and SIGTERM are only noted (`pending`); the training loop acts at the
    next step boundary (checkpoint first), then calls `forward()` to hand each noted signal, in the
    order they came, to whoever had it before: a Python handler (submitit's checkpoint-and-requeue)
    is called with (signum, None), SIG_DFL terminates the process by re-raising the signal, SIG_IGN
    lets training continue. Both signals are kept when both arrive within one step (a preemption
    sends SIGTERM, a time limit SIGUSR2): SIGTERM must not hide the SIGUSR2 that requeues the job.
    Only the main thread can install handlers; elsewhere this does nothing."""

    def __init__(self, signals: tuple[int, ...] = HANDLED_SIGNALS) -> None:
        self.signals = signals
        self._pending: list[int] = []  # distinct signals not yet forwarded, in arrival order
        self._previous: dict[int, Any] = {}

    @property
    def pending(self) -> int | None:
        """The first signal not yet forwarded, or None."""
        return self._pending[0] if self._pending else None

    def _note(self, signum: int, frame: types.FrameType | None) -> None:
        if signum not in self._pending:
            self._pending.append(signum)

    def __enter__(self) -> DeferredSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, prev in self._previous.items():
            signal.signal(s, signal.SIG_DFL if prev is None else prev)
        self._previous.clear()

    def forward(self) -> None:
        """Give each pending signal, in arrival order, to its previous handler (restored meanwhile)."""
        while self._pending:
            signum = self._pending.pop(0)
            prev = self._previous.get(signum, signal.SIG_DFL)
            name = signal.Signals(signum).name
            # None: a handler installed outside Python, which we cannot call; terminate as by default.
            signal.signal(signum, signal.SIG_DFL if prev is None else prev)
            if callable(prev):
                logger.info("%s: checkpoint written, calling the previous handler %r", name, prev)
                prev(signum, None)
            elif prev in (signal.SIG_DFL, None):
                logger.info("%s: checkpoint written, terminating", name)
                signal.raise_signal(signum)
            else:
                logger.info("%s: checkpoint written; the signal was ignored before, so training continues", name)
            signal.signal(signum, self._note)  # still running: keep deferring


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


def evaluate_set(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, contrast_norm: str,
                 stimulus: StimulusConfig, device: torch.device, batch_size: int,
                 hits: np.ndarray | None = None) -> tuple[float, int, int]:
    """(summed cross-entropy, correct predictions, images) over every image, the last partial batch
    included. `hits`, a bool array of len(labels), receives which images were classified right."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    n = len(labels)
    if hits is not None and hits.shape != (n,):
        raise ValueError(f"hits must have shape ({n},), got {hits.shape}")
    with torch.no_grad():
        for start in range(0, n, batch_size):
            x = torch.from_numpy(np.array(images[start:start + batch_size])).to(device)  # a copy: memmaps are read-only
            y = torch.as_tensor(np.asarray(labels[start:start + batch_size]), dtype=torch.int64).to(device)
            logits = model(normalize(x, contrast_norm, stimulus))
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
            right = logits.argmax(1) == y
            correct += right.sum()
            if hits is not None:
                hits[start:start + len(y)] = right.cpu().numpy()
    model.train(was_training)
    return float(loss_sum.item()), int(correct.item()), n


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
def _new_model(cfg: TrainConfig, device: torch.device, bf16: bool) -> tuple[EccNet, torch.optim.Optimizer]:
    model = EccNet(cfg.model, cfg.stimulus.crop_size, seed=cfg.seed, bf16=bf16).to(device)
    # TensorFlow's Adagrad starts its accumulator at 0.1 (PyTorch's default is 0); no weight decay.
    optimizer = torch.optim.Adagrad(model.parameters(), lr=cfg.learning_rate, initial_accumulator_value=0.1)
    return model, optimizer


def _fresh_state(cfg: TrainConfig) -> dict[str, Any]:
    return {"format": CHECKPOINT_FORMAT, "hash": cfg.hash, "epoch": 0, "batch": 0, "step": 0,
            "sums": {"loss": 0.0, "correct": 0, "count": 0}, "metrics": [], "wall_time_s": 0.0,
            "train_time_s": 0.0, "epoch_time_s": 0.0, "images": 0}


def _resume(path: Path, cfg: TrainConfig, device: torch.device, bf16: bool
            ) -> tuple[EccNet, torch.optim.Optimizer, dict[str, Any]]:
    """Model, optimizer and progress from the checkpoint, or fresh ones when there is no usable one."""
    try:
        ckpt = load_checkpoint(path, map_location=device)
        if ckpt is not None:
            if ckpt["hash"] != cfg.hash:
                raise CorruptFileError(f"{path} belongs to run {ckpt['hash']!r}, not {cfg.hash}")
            model, optimizer = _new_model(cfg, device, bf16)
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
    model, optimizer = _new_model(cfg, device, bf16)
    return model, optimizer, _fresh_state(cfg)


def _sync_metrics(path: Path, records: list[dict[str, Any]]) -> None:
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
    run_dir.mkdir(parents=True, exist_ok=True)
    _claim_folder(run_dir, cfg)
    try:
        done = read_result(run_dir, "train")
    except CorruptFileError as e:
        logger.warning("ignoring an unreadable result (%s); training again", e)
        done = None
    if done is not None and done["hash"] == cfg.hash:
        logger.info("%s is already trained", run_dir)
        return done

    device = apply_run_options(options)
    bf16 = options.precision == "bf16"
    bars = options.progress and sys.stderr.isatty()  # in a job's log a bar is thousands of carriage returns
    train_set = datasets.load(cfg.train_spec(), data_root, source, progress=bars, device=device)
    val_set = datasets.load(cfg.validation_spec(), data_root, source, progress=bars, device=device)
    images = _Images(train_set, device)
    n = images.n
    per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = per_epoch * cfg.num_epochs

    ckpt_path = run_dir / CHECKPOINT
    model, optimizer, state = _resume(ckpt_path, cfg, device, bf16)
    _sync_metrics(run_dir / METRICS, state["metrics"])
    wall_before = state["wall_time_s"]
    loss_sum = torch.tensor(state["sums"]["loss"], dtype=torch.float64, device=device)
    correct = torch.tensor(state["sums"]["correct"], dtype=torch.int64, device=device)
    count = int(state["sums"]["count"])

    def checkpoint() -> None:
        state["sums"] = {"loss": float(loss_sum.item()), "correct": int(correct.item()), "count": count}
        state["wall_time_s"] = wall_before + time.time() - t_call
        save_checkpoint(ckpt_path, {**state, "model": model.state_dict(), "optimizer": optimizer.state_dict()})

    progress = _Progress(options.progress, options.progress_interval, total_steps, state["step"],
                         run_dir / PROGRESS)
    model.train()
    try:
        with DeferredSignals() as signals:
            while state["epoch"] < cfg.num_epochs:
                epoch = state["epoch"]
                order = np.random.default_rng([cfg.seed, epoch]).permutation(n)
                t_epoch = time.perf_counter() - state["epoch_time_s"]
                for b in range(state["batch"], per_epoch):
                    index = np.sort(order[b * cfg.batch_size:(b + 1) * cfg.batch_size])
                    x, y = images.batch(index)
                    logits = model(normalize(x, cfg.contrast_norm, cfg.stimulus))  # (B, classes)
                    loss = F.cross_entropy(logits, y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    loss_sum += loss.detach().double() * len(index)
                    correct += (logits.detach().argmax(1) == y).sum()
                    count += len(index)
                    state["batch"], state["step"] = b + 1, state["step"] + 1
                    state["epoch_time_s"] = time.perf_counter() - t_epoch
                    if on_step is not None:
                        on_step(state["step"])
                    if progress.update():
                        progress.status(state["step"], epoch + 1, cfg.num_epochs,
                                        f"loss {loss_sum.item() / count:.4f} acc {correct.item() / count:.3f}",
                                        count / max(state["epoch_time_s"], 1e-9),
                                        state["metrics"][-1]["val/acc"] if state["metrics"] else None)
                    last = b + 1 == per_epoch  # the epoch-end checkpoint follows validation
                    if signals.pending is not None and not last:
                        checkpoint()
                        signals.forward()
                    elif options.checkpoint_every and state["step"] % options.checkpoint_every == 0 and not last:
                        checkpoint()

                # ---- epoch end: validation, metrics, checkpoint
                train_time = time.perf_counter() - t_epoch
                val_loss, val_correct, val_n = evaluate_set(model, val_set.images, val_set.labels,
                                                            cfg.contrast_norm, cfg.stimulus, device, cfg.batch_size)
                record = {"epoch": epoch + 1, "step": state["step"], "train/loss": float(loss_sum.item()) / count,
                          "train/acc": int(correct.item()) / count, "val/loss": val_loss / val_n,
                          "val/acc": val_correct / val_n, "images_per_s": count / max(train_time, 1e-9),
                          "time": round(wall_before + time.time() - t_call, 3)}  # seconds since the run began
                state["metrics"].append(record)
                state["train_time_s"] += train_time
                state["images"] += count
                state["epoch"], state["batch"], state["epoch_time_s"] = epoch + 1, 0, 0.0
                loss_sum.zero_()
                correct.zero_()
                count = 0
                checkpoint()
                append_jsonl(run_dir / METRICS, record)
                progress.record(step=state["step"], epoch=epoch + 1, num_epochs=cfg.num_epochs,
                                images_per_s=record["images_per_s"], val_acc=record["val/acc"])
                progress.line(
                    f"epoch {epoch + 1}/{cfg.num_epochs} step {state['step']}: train/loss {record['train/loss']:.4f} "
                    f"train/acc {record['train/acc']:.4f} val/loss {record['val/loss']:.4f} "
                    f"val/acc {record['val/acc']:.4f} ({record['images_per_s']:.0f} img/s)")
                if signals.pending is not None:
                    signals.forward()
    finally:
        progress.close()

    final = state["metrics"][-1]
    result = {
        "kind": "train", "hash": cfg.hash, "config": to_jsonable(cfg),
        "final": {k: final[k] for k in METRIC_KEYS},
        "best_epoch": best_epoch(state["metrics"]), "epochs": cfg.num_epochs, "steps": state["step"],
        "wall_time_s": round(wall_before + time.time() - t_call, 3), "device": str(device),
        "images_per_s": state["images"] / max(state["train_time_s"], 1e-9),
        "n_train_images": n, "n_validation_images": len(val_set.labels),
    }
    atomic_write_json(run_dir / RESULT, result)
    return result


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


# -------------------------------------------------------------------------------- CLI
@dataclass(frozen=True)
class TrainArgs:
    """Train the eccentricity-dependent model (the original's ecc_train.py). The run folder is
    TRAIN_DIR/trained/MODEL_NAME; the stimuli are generated once into TRAIN_DIR/data."""

    config: TrainConfig = field(default_factory=TrainConfig)  # what to train
    options: RunOptions = field(default_factory=RunOptions)  # how to run
    source: SourceConfig = field(default_factory=SourceConfig)  # where the images come from


def _apply_malloc_env() -> None:
    """model.MALLOC_ENV through mallopt (glibc), unless already set in the environment."""
    if all(os.environ.get(k) == v for k, v in MALLOC_ENV.items()):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        options = {"MALLOC_MMAP_MAX_": -4, "MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_TOP_PAD_": -2}
        for key, value in MALLOC_ENV.items():
            libc.mallopt(options[key], int(value))


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
        _claim_folder(run_dir, cfg)  # refuses a folder holding another run
    except ValueError as e:
        parser.error(str(e))
    with _console_logging():
        if resolve_device(options.device).type == "cpu":
            _apply_malloc_env()
        print(f"run {cfg.hash} -> {run_dir}", flush=True)
        result = train(cfg, run_dir, data_root=train_dir / "data", source=args.source, options=options)
    final = result["final"]
    print(f"done: train/acc {final['train/acc']:.4f} val/acc {final['val/acc']:.4f} "
          f"(best epoch {result['best_epoch']}) in {result['wall_time_s']:.1f} s; {run_dir / RESULT}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
