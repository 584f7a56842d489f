"""Stimulus generation speed: our canvas-free renderer against the original algorithm, same run.

    python bench/stimuli.py [--images 1024] [--reference-images 40]

Prints images/s of the reference (the original: a 1920^2 canvas, pastes, PIL resizes of every
crop; tests/original_stimuli.py) and of ecc.stimuli.render (one thread and all threads; float64 =
bit-exact, float32; and CUDA when present), their ratio, and the max/mean pixel difference on the
same images, for the demo geometry: training images (random shifts, no flanker) and a test
condition with two flankers (xax)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import original_stimuli as original

from ecc import sources
from ecc.stimuli import StimulusConfig, render, sample_random_shifts


def reference_rate(cfg: StimulusConfig, targets, flankers, te, fe, ft, n: int) -> tuple[float, np.ndarray]:
    out = np.empty((n, *cfg.shape), np.uint8)
    t0 = time.perf_counter()
    for k in range(n):
        _, out[k] = original.build(targets[k], field_size=cfg.field_size, digit_height=cfg.digit_height,
                                   flanker_height=cfg.flanker_height, crop_size=cfg.crop_size,
                                   num_scales=cfg.num_scales, fovea=cfg.fovea, chevron=cfg.chevron,
                                   target_ecc=float(te[k]), flanker=flankers[k],
                                   flanker_ecc=None if ft == 0 else float(fe[k]), flanker_type=ft)
    return n / (time.perf_counter() - t0), out


def our_rate(cfg, targets, flankers, te, fe, ft, *, device, dtype, repeats: int = 2) -> tuple[float, np.ndarray]:
    kwargs = dict(target_ecc=te, flankers=flankers if ft else None, flanker_ecc=fe if ft else None,
                  flanker_type=ft, device=device, dtype=dtype, batch_size=128)
    render(targets[:128], cfg, **{**kwargs, "target_ecc": te[:128],
                                  "flankers": flankers[:128] if ft else None,
                                  "flanker_ecc": fe[:128] if ft else None})  # warm-up
    best = 0.0
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = render(targets, cfg, **kwargs)
        best = max(best, len(targets) / (time.perf_counter() - t0))
    return best, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1024, help="images rendered by ours per measurement")
    p.add_argument("--reference-images", type=int, default=40, help="images rendered by the slow reference")
    args = p.parse_args()

    cfg = StimulusConfig()
    pairs = sources.pairs("train", "even", "MNIST", sources.SourceConfig())
    n = args.images
    targets, flankers = pairs.targets[:n], pairs.flankers[:n]
    rng = np.random.default_rng(0)
    workloads = {
        "train: random shifts, no flanker": (0, *sample_random_shifts(cfg, n, rng)),
        "test: xax, target 240, flankers 120/360": (2, np.full(n, 240.0), np.full(n, 360.0)),
    }
    threads = torch.get_num_threads()
    print(f"demo geometry: field {cfg.field_size}, digit {cfg.digit_height}, {cfg.num_scales} crops of "
          f"{cfg.crop_size}^2; {os.cpu_count()} CPUs, torch {torch.__version__}")
    for name, (ft, te, fe) in workloads.items():
        m = args.reference_images
        ref_rate, ref_out = reference_rate(cfg, targets, flankers, te, fe, ft, m)
        print(f"\n{name}\n  reference (original algorithm, PIL, 1 process): {ref_rate:8.1f} images/s")
        runs = [("cpu", torch.float64, 1), ("cpu", torch.float32, 1),
                ("cpu", torch.float64, threads), ("cpu", torch.float32, threads)]
        if torch.cuda.is_available():
            runs += [("cuda", torch.float32, threads), ("cuda", torch.float64, threads)]
        for device, dtype, nthreads in runs:
            torch.set_num_threads(nthreads)
            rate, out = our_rate(cfg, targets, flankers, te, fe, ft, device=device, dtype=dtype)
            diff = np.abs(out[:m].astype(int) - ref_out.astype(int))
            label = f"ours {device} {str(dtype).replace('torch.', '')} {nthreads} thread{'s' if nthreads > 1 else ''}"
            print(f"  {label:34s}: {rate:8.1f} images/s  x{rate / ref_rate:6.1f}   "
                  f"max diff {diff.max()} gray level, mean {diff.mean():.2e}")
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
