"""Training throughput of the demo model (pm 11-1-1-1-1, 11 x 60 x 60, 5 classes) against a matmul.

    python bench/train.py [--batch 128] [--steps 6] [--device cpu|cuda] [--bf16] [--no-reference]

Prints images/s, the achieved GFLOP/s (3 x forward FLOPs per image for forward + backward), the
GFLOP/s of a square matmul measured in the same run with the same threads (fp32; bf16 too with
--bf16), and their ratio; best step and median step, since a shared machine is noisy. Also the
plain reference implementation (Conv3d / max_pool3d in the original's op order) for comparison.
Without the malloc settings that jobs get (ecc.environment.MALLOC_ENV) it re-runs itself with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

import torch
import torch.nn.functional as F

from ecc.environment import MALLOC_ENV
from ecc.model import EccNet, ModelConfig, build, reference_forward


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Wall seconds of each of `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> list[float]:
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    return [2 * n**3 / t / 1e9 for t in timed(lambda: a @ b, device, repeats, warmup=2)]


def train_step_fn(net: EccNet, batch: int, device: torch.device, reference: bool) -> Callable[[], None]:
    gen = torch.Generator(device=device).manual_seed(0)
    cfg = net.cfg
    x = torch.rand(batch, cfg.num_scales, net.crop_size, net.crop_size, device=device, generator=gen) - 0.5
    y = torch.randint(0, cfg.num_classes, (batch,), device=device, generator=gen)
    opt = torch.optim.Adagrad(net.parameters(), lr=0.01, initial_accumulator_value=0.1)

    def step() -> None:
        if reference:
            with torch.autocast(device.type, torch.bfloat16, enabled=net.bf16):
                logits = reference_forward(net, x).float()
        else:
            logits = net(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def report(name: str, times: list[float], batch: int, flops_per_image: int, peak_best: float,
           peak_median: float) -> None:
    best, median = min(times), statistics.median(times)
    for label, t, peak in (("best", best, peak_best), ("median", median, peak_median)):
        ips = batch / t
        gflops = 3 * flops_per_image * ips / 1e9
        print(f"{name:10s} {label:6s} step {t * 1e3:7.0f} ms  {ips:7.1f} images/s  {gflops:7.1f} GFLOP/s  "
              f"{100 * gflops / peak:5.1f}% of matmul")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6, help="timed training steps (after 2 warm-up steps)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        choices=["cpu", "cuda"])
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (always on for cuda)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--matmul_n", type=int, default=0,
                        help="side of the reference matmul (0: 2048 on a CPU, 8192 on a GPU)")
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="skip timing the plain reference implementation")
    args = parser.parse_args()

    missing = {k: v for k, v in MALLOC_ENV.items() if os.environ.get(k) != v}
    if args.device == "cpu" and missing and sys.platform.startswith("linux"):
        print(f"re-running with {' '.join(f'{k}={v}' for k, v in missing.items())} (ecc.environment.MALLOC_ENV, "
              "as jobs get them; glibc reads them at start-up)", flush=True)
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **missing})

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bf16 = args.bf16 or device.type == "cuda"
    matmul_n = args.matmul_n or (8192 if device.type == "cuda" else 2048)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    cfg = ModelConfig()
    net = build(cfg, 60, seed=0, bf16=bf16).to(device)
    flops = net.flops_per_image()
    threads = f"{torch.get_num_threads()} threads"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else threads
    print(f"device {device} ({where}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')})"
          f", torch {torch.__version__}, batch {args.batch}, bf16 {bf16}, model pm {cfg.pm}: "
          f"{flops / 1e6:.1f} MFLOP forward per image, {3 * flops / 1e6:.1f} per trained image", flush=True)

    if bf16 and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        print("warning: this CPU has no native bfloat16 (oneDNN says so): bf16 runs emulated, "
              "many times slower than fp32", flush=True)
    dtypes = [torch.float32] + ([torch.bfloat16] if bf16 and device.type == "cuda" else [])
    peaks: dict[torch.dtype, list[float]] = {dt: [] for dt in dtypes}

    def measure_matmul() -> None:
        for dt in dtypes:
            peaks[dt] += matmul_gflops(device, dt, matmul_n, repeats=8)

    # matmul before and after each timed model, so all see the same machine
    measure_matmul()
    fast_step = train_step_fn(net, args.batch, device, reference=False)
    times = {"fast": timed(fast_step, device, args.steps, warmup=2)}
    measure_matmul()
    if args.reference:
        ref = build(cfg, 60, seed=0, bf16=bf16).to(device)
        times["reference"] = timed(train_step_fn(ref, args.batch, device, reference=True), device,
                                   max(2, args.steps // 3), warmup=1)
        measure_matmul()

    peak_dt = torch.bfloat16 if bf16 and device.type == "cuda" else torch.float32
    for dt, vals in peaks.items():
        print(f"matmul {matmul_n}^2 {str(dt).removeprefix('torch.'):8s} best {max(vals):7.1f} GFLOP/s  "
              f"median {statistics.median(vals):7.1f} GFLOP/s")
    peak = peaks[peak_dt]
    print(f"ratios against the {str(peak_dt).removeprefix('torch.')} matmul "
          "(best vs best, median vs median):")
    for name, ts in times.items():
        report(name, ts, args.batch, flops, max(peak), statistics.median(peak))
    if "reference" in times:
        speedup = statistics.median(times["reference"]) / statistics.median(times["fast"])
        print(f"fast path: {speedup:.1f}x the reference's throughput (median steps)")


if __name__ == "__main__":
    main()
