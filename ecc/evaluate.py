"""Evaluation: test conditions (target and flankers), evaluate_set (one model over a set of images,
training's validation too), an Evaluator that loads a trained run once, and `python -m ecc.evaluate`.

Accuracy counts every test target of a condition (the original dropped the last partial batch).
Test stimuli are generated in memory by default (nothing written), or taken from the dataset cache.

Every evaluation can also keep which test images it got right (`correct.npy` beside result.json:
numpy.packbits of one bool per image, big bit order). Image i is the i-th target of the test split
of the model's parity, in MNIST order, whatever the condition (flankers and positions change, the
target digits do not), so two models or two conditions with the same `test_images` block in their
results are compared image by image (results.stats, paired).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from core.atomic import CorruptFileError, atomic_write_json, read_json
from core.cli import Parser, add_arguments, arg, from_namespace
from core.hits import read_hits, write_hits  # noqa: F401 (the record's format: core.hits)
from core.identity import digest, from_jsonable, to_jsonable
from core.layout import HITS, RESULT

from . import datasets
from .checkpoint import final_weights
from .conditions import Condition, eval_hash
from .config import DEVICES, PRECISIONS, RunOptions, TrainConfig
from .datasets import DatasetSpec
from .model import build
from .runtime import apply_run_options
from .sources import SourceConfig
from .stimuli import StimulusConfig, normalize

logger = logging.getLogger(__name__)

def test_images_record(labels: np.ndarray, parity: str, validation_size: int) -> dict[str, Any]:
    """Which test images an evaluation saw, so that paired comparisons can check they match."""
    return {"split": "test", "parity": parity, "first": len(labels),
            "order": "the test split's targets of this parity, in MNIST order",
            "labels_sha1": digest(np.asarray(labels, dtype=np.int64).tolist(), 40)}


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


class Evaluator:
    """A trained run, loaded once (config, result, final weights), evaluated on any number of conditions.

    `data_root` None generates each condition's test stimuli in memory (nothing written); a
    folder takes them from (or builds them into) the dataset cache there. `test_images` limits the
    test targets (0 = all ~4,900 even test digits)."""

    def __init__(self, run_dir: str | os.PathLike, *, options: RunOptions | None = None,
                 source: SourceConfig | None = None, data_root: str | os.PathLike | None = None,
                 batch_size: int = 256, test_images: int = 0) -> None:
        if batch_size < 1 or test_images < 0:
            raise ValueError(f"batch_size must be >= 1 and test_images >= 0, got {batch_size} and {test_images}")
        self.run_dir = Path(run_dir)
        result = read_json(self.run_dir / RESULT, ("hash", "config"))
        if result is None:
            raise FileNotFoundError(f"{self.run_dir / RESULT} does not exist: the run has not finished training")
        self.config: TrainConfig = from_jsonable(TrainConfig, result["config"])
        self.model_hash: str = result["hash"]
        if self.config.hash != self.model_hash:
            raise CorruptFileError(f"{self.run_dir / RESULT}: its config hashes to {self.config.hash}, "
                                   f"not {self.model_hash}")
        self.result = result
        options = options or RunOptions()
        self.options, self.source, self.batch_size, self.test_images = options, source, batch_size, test_images
        self.data_root = None if data_root is None else Path(data_root)
        self.device = apply_run_options(options)
        self.model = build(self.config.model, self.config.stimulus.crop_size, seed=self.config.seed,
                           bf16=options.precision == "bf16", num_scales=self.config.stimulus.num_scales)
        self.model.load_state_dict(final_weights(self.run_dir, map_location="cpu"))
        self.model.to(self.device).eval()

    def spec(self, condition: Condition, test_images: int | None = None) -> DatasetSpec:
        """The test stimuli of a condition, in this model's geometry, on its background setting."""
        cfg = self.config
        limit = self.test_images if test_images is None else test_images
        return DatasetSpec(split="test", stimulus=cfg.stimulus, parity=cfg.model.parity,
                           flanker_dset=condition.flanker_dset, random_shifts=False,
                           target_ecc=condition.target_ecc, flanker_type=condition.flanker_type,
                           flanker_ecc=condition.flanker_ecc if condition.flanker_type else 0.0,
                           place=cfg.place, seed=0, limit=limit, validation_size=cfg.validation_size)

    def check(self, condition: Condition) -> Condition:
        """The canonical condition; raises InvalidPlacement when it cannot be rendered for this model."""
        cond = condition.canonical()
        cond.check(self.config.stimulus)
        return cond

    def evaluate(self, condition: Condition, *, test_images: int | None = None,
                 out: str | os.PathLike | None = None, hits_out: str | os.PathLike | None = None) -> dict[str, Any]:
        """Accuracy on every test target of `condition` (at most `test_images`, default the
        Evaluator's); written atomically to `out` (a JSON file) if given. `hits_out`: where to
        write the per-image record (write_hits), before the result that names it."""
        t0 = time.time()
        cond = self.check(condition)  # before any work
        test_images = self.test_images if test_images is None else test_images
        if test_images < 0:
            raise ValueError(f"test_images must be >= 0 (0 = all), got {test_images}")
        spec = self.spec(cond, test_images)
        if self.data_root is None:
            data = datasets.generate(spec, self.source, device=self.device)
        else:
            data = datasets.load(spec, self.data_root, self.source, progress=self.options.progress,
                                 device=self.device)
        hits = np.zeros(len(data.labels), dtype=bool)
        _, n_correct, n = evaluate_set(self.model, data.images, data.labels, self.config.contrast_norm,
                                       self.config.stimulus, self.device, self.batch_size, hits=hits)
        per_image = None
        if hits_out is not None:
            write_hits(hits_out, hits)
            per_image = {"file": Path(hits_out).name, "n": n, "packing": "numpy.packbits, big bit order",
                         "test_images": test_images_record(data.labels, self.config.model.parity,
                                                           self.config.validation_size)}
        result = {
            "kind": "eval", "hash": eval_hash(self.model_hash, cond, test_images),
            "model_hash": self.model_hash, "condition": to_jsonable(cond), "label": cond.label,
            "spacing": cond.spacing, "n_images": n, "n_correct": n_correct, "accuracy": n_correct / n,
            "test_images": test_images, "seed": self.config.seed, "wall_time_s": round(time.time() - t0, 3),
            "device": str(self.device),
        }
        if per_image is not None:
            result["per_image"] = per_image
        if out is not None:
            atomic_write_json(out, result)
        return result

    __call__ = evaluate


# -------------------------------------------------------------------------------- CLI
@dataclass(frozen=True)
class EvalArgs:
    """Evaluate a trained model on one test condition (the original's ecc_eval.py): accuracy on
    every test target, printed as JSON (and written to --out)."""

    train_dir: str = arg("runs", "the run is TRAIN_DIR/trained/MODEL_NAME, as written by python -m ecc.train")
    model_name: str = arg("", "name of the run folder under TRAIN_DIR/trained")
    run_dir: str = arg("", "the run folder itself (instead of --train_dir/--model_name)")
    condition: Condition = field(default_factory=Condition)  # the test condition
    batch_size: int = arg(256, "test images per forward pass (every image counts, the last batch too)")
    test_images: int = arg(0, "evaluate at most this many test targets (0 = all)")
    from_cache: bool = arg(False, "take the test stimuli from the dataset cache (built there once) instead of "
                           "generating them in memory")
    data_root: str = arg("", "the dataset cache for --from_cache (default: TRAIN_DIR/data)")
    out: str = arg("", "also write the result JSON to this file, and which test images were right to "
                   "OUT without its suffix + .correct.npy (numpy.packbits, one bit per image)")
    device: str = arg("auto", "where to compute: auto (a GPU when there is one), cpu or cuda", choices=DEVICES)
    precision: str = arg("fp32", "fp32 (TF32 off), tf32 or bf16 autocast (see python -m ecc.train --help)",
                         choices=PRECISIONS)
    threads: int = arg(0, "CPU threads for torch (0 = torch's default)")
    source: SourceConfig = field(default_factory=SourceConfig)  # where the MNIST images come from

    def __post_init__(self) -> None:
        # As RunOptions.model_name: a name, not a path that leads out of TRAIN_DIR/trained.
        if self.model_name and (os.sep in self.model_name or self.model_name in (".", "..")):
            raise ValueError(f"model_name {self.model_name!r} must be a plain folder name under TRAIN_DIR/trained, "
                             f"without {os.sep!r}; give a run folder elsewhere with --run_dir")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m ecc.evaluate", description=EvalArgs.__doc__)
    add_arguments(parser, EvalArgs)
    ns = parser.parse_args(argv)
    try:
        args: EvalArgs = from_namespace(EvalArgs, ns)
    except ValueError as e:
        parser.error(str(e))
    if args.run_dir:
        run_dir = Path(args.run_dir)
    elif args.model_name:
        run_dir = Path(args.train_dir) / "trained" / args.model_name
    else:
        parser.error("name the run: --model_name (under --train_dir) or --run_dir")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    options = RunOptions(device=args.device, precision=args.precision, threads=args.threads, progress=False)
    data_root = (Path(args.data_root) if args.data_root else Path(args.train_dir) / "data") if args.from_cache else None
    try:
        evaluator = Evaluator(run_dir, options=options, source=args.source, data_root=data_root,
                              batch_size=args.batch_size, test_images=args.test_images)
        evaluator.check(args.condition)
    except (FileNotFoundError, ValueError) as e:  # no such run, or a condition it cannot render
        parser.error(str(e))
    hits_out = Path(args.out).with_suffix(f".{HITS}") if args.out else None
    result = evaluator.evaluate(args.condition, out=args.out or None, hits_out=hits_out)
    print(json.dumps(result, indent=2, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
