"""A synthetic experiment folder (plan.json, train and eval runs, selection.json) in the documented
layout (docs/architecture.md), for the results tests and the notebook's stored outputs.

Accuracies come from a made-up crowding-like function (not from any model): they only have to look
plausible and be known exactly. Helpers break single runs afterwards (failed, missing, corrupt).
With `seeds`, every training run is replicated; `seed_spread` gives each seed (each trained network)
its own accuracies: a probit shift per seed and one per seed x condition, each of sd `seed_spread`
(`FakeExperiment.accuracy` keeps each network's true accuracy). With `per_image`, every evaluation
keeps which test images it got right (correct.npy), from a probit model of the one test set: image
i is right in condition c when sqrt(0.3) d_i + sqrt(0.2) g_ci + sqrt(0.2) f_si + sqrt(0.3) eps_sci
< Phi^-1(accuracy), d_i the image's difficulty (shared by every condition, seed and model), g_ci an
image x condition effect (shared by every seed and model), f_si a seed x image effect (shared by a
network's conditions), eps fresh noise; each network's expected accuracy is its true one (the model
of bench/coverage.py).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from core.atomic import append_jsonl, atomic_write_json
from core.identity import digest, to_jsonable
from core.layout import HITS, PLAN
from core.plan import EvalEntry, Plan, TrainEntry
from core.runs import record_submission, write_config, write_error, write_result
from ecc.evaluate import write_hits
from ecc.model import ModelConfig
from ecc.stimuli import InvalidPlacement, StimulusConfig, check_placement


@dataclass(frozen=True)
class FakeModel:
    """One model of the fake sweep (its settings and how its training goes)."""

    contrast_norm: str = "None"
    pm: str = "11-1-1-1-1"
    train_fails: bool = False  # every learning rate fails: the selection chooses nothing
    robustness: float = 0.5    # 0: flankers bring accuracy to chance, 1: flankers do nothing
    isolated: float | None = None  # the isolated target's accuracy at every eccentricity (None: falls with it)

    @property
    def name(self) -> str:
        return f"{self.pm}_total_pool_contrast_{self.contrast_norm}"


@dataclass(frozen=True)
class FakeGrid:
    """Evaluation grid (the demo's by default: 0..780 step 60 x 0..840 step 120)."""

    target_eccs: tuple[float, ...] = tuple(float(x) for x in range(0, 781, 60))
    flanker_eccs: tuple[float, ...] = tuple(float(x) for x in range(0, 841, 120))
    flanker_types: tuple[int, ...] = (0, 1, 2)
    flanker_dset: str = "MNIST"


DEFAULT_MODELS = (FakeModel("areafactor", robustness=0.6), FakeModel("None", robustness=0.35))


@dataclass
class FakeExperiment:
    path: Path
    plan: Plan
    accuracy: dict[str, float] = field(default_factory=dict)  # eval hash -> the synthetic accuracy

    def eval_dir(self, hash_: str) -> Path:
        return self.path / "eval" / hash_

    def find_eval(self, model: str, flanker_type: int, target_ecc: float,
                  flanker_ecc: float | None = None) -> EvalEntry:
        """The plan entry of one evaluation."""
        for e in self.plan.eval:
            c = e.condition
            if (e.model == model and c["flanker_type"] == flanker_type and c["target_ecc"] == target_ecc
                    and (flanker_type == 0 or c["flanker_ecc"] == flanker_ecc)):
                return e
        raise KeyError((model, flanker_type, target_ecc, flanker_ecc))


def grid_conditions(grid: FakeGrid, stimulus: StimulusConfig) -> list[dict[str, Any]]:
    """The valid, distinct conditions of a grid (type 2 canonicalised to the farther flanker)."""
    seen, out = set(), []
    for ftype in grid.flanker_types:
        for t in grid.target_eccs:
            for f in grid.flanker_eccs if ftype else [None]:
                if ftype == 2 and abs(2 * t - f) > abs(f):
                    f = 2 * t - f
                try:
                    check_placement(stimulus, t, ftype, f)
                except InvalidPlacement:
                    continue
                key = (ftype, t, f)
                if key not in seen:
                    seen.add(key)
                    out.append({"target_ecc": t, "flanker_ecc": f, "flanker_type": ftype,
                                "flanker_dset": grid.flanker_dset})
    return out


def synthetic_accuracy(cond: dict[str, Any], model: FakeModel, chance: float = 0.2) -> float:
    """Made-up crowding: accuracy falls with eccentricity; flankers pull it towards chance, more so
    when close, far from the centre, and two of them."""
    t = abs(float(cond["target_ecc"]))
    base = chance + (0.97 - chance) / (1 + (t / 650.0) ** 3) if model.isolated is None else model.isolated
    if cond["flanker_type"] == 0:
        return base
    spacing = abs(float(cond["flanker_ecc"]) - float(cond["target_ecc"]))
    hit = (1 - model.robustness) * math.exp(-(spacing - 120) / (150 + 0.6 * t)) * (0.3 + 0.7 * t / (t + 250))
    if cond["flanker_type"] == 2:
        hit = 1 - (1 - hit) ** 2
    return chance + (base - chance) * (1 - hit)


def train_config(model: FakeModel, learning_rate: float, epochs: int, seed: int = 0) -> dict[str, Any]:
    """A TrainConfig as JSON (docs/architecture.md: stimulus, model, then the training fields)."""
    return {
        "stimulus": to_jsonable(StimulusConfig(num_scales=int(model.pm.split("-")[0]))),
        "model": to_jsonable(ModelConfig(pm=model.pm)),
        "random_shifts": True, "target_ecc": 0.0, "flanker_type": 0, "flanker_ecc": 0.0,
        "flanker_dset": "MNIST", "contrast_norm": model.contrast_norm, "place": "None",
        "validation_size": 5000, "train_images": 0, "learning_rate": learning_rate,
        "num_epochs": epochs, "batch_size": 128, "seed": seed,
    }


def write_fake_experiment(root: str | Path, *, name: str = "fake", grid: FakeGrid = FakeGrid(),
                          models: Sequence[FakeModel] = DEFAULT_MODELS,
                          learning_rates: Sequence[float] = (0.1, 0.01, 0.001), n_images: int = 4926,
                          epochs: int = 5, seed: int = 0, seeds: Sequence[int] = (0,),
                          per_image: bool = False, seed_spread: float = 0.0) -> FakeExperiment:
    """Write a complete, all-done experiment folder `root/name` and return it with its plan."""
    exp = Path(root) / name
    if exp.exists():
        shutil.rmtree(exp)
    exp.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    difficulty = np.random.default_rng([seed, 1]).standard_normal(n_images)  # the one test set
    trains: list[TrainEntry] = []
    evals: list[EvalEntry] = []
    selection: dict[str, Any] = {"rule": "highest val/acc, ties broken by lowest val/loss", "models": []}
    fake = FakeExperiment(exp, Plan(name))
    job = 1000
    for model in models:
        candidates = []
        for lr, run_seed in ((lr, sd) for lr in learning_rates for sd in seeds):
            cfg = train_config(model, lr, epochs, run_seed)
            h = digest(cfg)
            run = exp / "train" / h
            write_config(run, "train", h, cfg, model=model.name)
            record_submission(run, executor="local", job_id=str(job), stage="train")
            job += 1
            trains.append(TrainEntry(h, f"train/{h}", model.name, run_seed, lr, cfg))
            cand = {"hash": h, "learning_rate": lr, "seed": run_seed, "state": "done", "error": ""}
            if model.train_fails:
                write_error(run, message=f"CUDA out of memory (lr {lr})", kind="RuntimeError")
                cand.update(state="failed", error=f"RuntimeError: CUDA out of memory (lr {lr})")
                candidates.append(cand)
                continue
            # lr 0.01 learns best, 0.1 is noisy, 0.001 is slow (as in the paper's sweeps).
            ceiling = {0.1: 0.9, 0.01: 0.97, 0.001: 0.8}.get(lr, 0.85)
            for epoch in range(1, epochs + 1):
                acc = 0.2 + (ceiling - 0.2) * (1 - math.exp(-1.2 * epoch))
                append_jsonl(run / "metrics.jsonl", {
                    "epoch": epoch, "step": epoch * 210, "train/loss": round(-math.log(acc) * 0.9, 4),
                    "train/acc": round(acc + 0.01, 4), "val/loss": round(-math.log(acc), 4),
                    "val/acc": round(acc, 4), "images_per_s": 650.0, "time": 10.0 * epoch})
            final = {"train/loss": round(-math.log(acc) * 0.9, 4), "train/acc": round(acc + 0.01, 4),
                     "val/loss": round(-math.log(acc), 4), "val/acc": round(acc, 4)}
            write_result(run, {"kind": "train", "hash": h, "config": cfg, "final": final, "best_epoch": epochs,
                               "epochs": epochs, "steps": epochs * 210, "wall_time_s": 10.0 * epochs,
                               "device": "cpu", "images_per_s": 650.0})
            cand.update(final, best_epoch=epochs)
            candidates.append(cand)
        done = [c for c in candidates if c["state"] == "done"]
        best = max(done, key=lambda c: (c["val/acc"], -c["val/loss"])) if done else None
        chosen = [c for c in done if best and c["learning_rate"] == best["learning_rate"]]
        selection["models"].append({"model": model.name, "chosen": best["hash"] if best else None,
                                    "learning_rate": best["learning_rate"] if best else None,
                                    "chosen_runs": [{k: c[k] for k in ("hash", "learning_rate", "seed")}
                                                    for c in chosen],
                                    "candidates": candidates})
        for run in chosen:
            net = np.random.default_rng([seed, 2, run["seed"], len(selection["models"])])
            seed_shift = seed_spread * net.standard_normal()
            seed_image = net.standard_normal(n_images)
            for ci, cond in enumerate(grid_conditions(grid, StimulusConfig())):
                h = digest({"model": run["hash"], "condition": cond})
                path = exp / "eval" / h
                entry = EvalEntry(h, f"eval/{h}", model.name, run["hash"], run["learning_rate"], run["seed"], cond,
                                  n_images)
                write_config(path, "eval", h, {k: getattr(entry, k) for k in (
                    "model", "model_hash", "learning_rate", "condition", "test_images", "seed")})
                record_submission(path, executor="local", job_id=str(job), stage="eval")
                job += 1
                acc = synthetic_accuracy(cond, model)
                if seed_spread:
                    acc = NormalDist().cdf(NormalDist().inv_cdf(acc) + seed_shift + seed_spread * net.standard_normal())
                result = {"kind": "eval", "hash": h, "model_hash": run["hash"], "condition": cond,
                          "n_images": n_images, "wall_time_s": 1.0}
                if per_image:
                    image_condition = np.random.default_rng([seed, 3, ci]).standard_normal(n_images)
                    latent = (math.sqrt(0.3) * difficulty + math.sqrt(0.2) * image_condition
                              + math.sqrt(0.2) * seed_image + math.sqrt(0.3) * rng.standard_normal(n_images))
                    hits = latent < NormalDist().inv_cdf(acc)
                    k = int(hits.sum())
                    write_hits(path / HITS, hits)
                    result["per_image"] = {"file": HITS, "n": n_images, "test_images": {
                        "split": "test", "parity": "even", "first": n_images, "labels_sha1": "fake"}}
                else:
                    k = int(rng.binomial(n_images, acc))
                result.update(n_correct=k, accuracy=round(k / n_images, 4))
                write_result(path, result)
                fake.accuracy[h] = acc
                evals.append(entry)
    fake.plan = Plan(name, tuple(trains), tuple(evals))
    fake.plan.write(exp / PLAN)
    atomic_write_json(exp / "selection.json", selection)
    return fake


# ----------------------------------------------------------------------------- breaking runs on purpose
def fail_run(run_dir: Path, message: str = "boom\nthe last line", kind: str = "ValueError") -> None:
    (run_dir / "result.json").unlink(missing_ok=True)
    write_error(run_dir, message=message, kind=kind)


def remove_run(run_dir: Path) -> None:
    shutil.rmtree(run_dir)


def corrupt_result(run_dir: Path) -> None:
    (run_dir / "result.json").write_text('{"kind": "eval", "n_images": 49')


def set_result(run_dir: Path, n_correct: int, n_images: int) -> None:
    from core.atomic import read_json

    result = read_json(run_dir / "result.json")
    assert result is not None
    result.update(n_correct=n_correct, n_images=n_images, accuracy=round(n_correct / n_images, 4))
    write_result(run_dir, result)


def write_demo_synthetic(root: str | Path, name: str = "demo-synthetic") -> FakeExperiment:
    """The demo's grid with made-up accuracies, two selected models, one model whose training failed,
    and a few broken evaluations (a failure, a lost run): the notebook's stored outputs come from it."""
    fake = write_fake_experiment(root, name=name, models=(*DEFAULT_MODELS, FakeModel("None", pm="11-3-1-1-1",
                                                                                     train_fails=True)))
    model = DEFAULT_MODELS[1].name
    fail_run(fake.eval_dir(fake.find_eval(model, 1, 480.0, 600.0).hash),
             "writing the predictions\n[Errno 122] Disk quota exceeded", kind="OSError")
    remove_run(fake.eval_dir(fake.find_eval(model, 2, 600.0, 720.0).hash))
    return fake


if __name__ == "__main__":
    import sys

    out = write_demo_synthetic(sys.argv[1] if len(sys.argv) > 1 else "/tmp/crowding-synthetic")
    print(out.path)
