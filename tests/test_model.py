"""EccNet: the original's shapes and parameter counts, pm validation, fast path == plain reference, init."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ecc.environment import MALLOC_ENV
from ecc.model import EccNet, ModelConfig, ScaleMaxPool, build, count_parameters, dcnn, reference_forward

# (pm, total_pool, pool_stride, crop_size): demo, late and gradual scale pooling, one scale, no
# total pool, stride 2 (the last layer's map drops below 5x5: a 1x1 convolution)
SCHEMES = [
    ("11-1-1-1-1", True, 1, 60),
    ("11-11-11-11-1", True, 1, 30),
    ("11-7-5-3-1", True, 1, 30),
    ("1-1-1-1", True, 1, 60),
    ("11-5-1", False, 1, 40),
    ("5-3-2-1-1", True, 2, 60),
    ("4-2-1-1-1", False, 2, 60),
]


def conv_params(cin: int, k: int, cout: int = 32) -> int:
    return cin * k * k * cout + cout


@pytest.mark.parametrize(("pm", "params"), [
    ("11-1-1-1-1", 832 + 3 * 25_632 + 165),  # 77,893, as the original
    ("11-11-11-11-1", 77_893),
    ("11-7-5-3-1", 77_893),
    ("1-1-1-1", 832 + 2 * 25_632 + 165),
])
def test_parameter_count_and_shapes(pm: str, params: int) -> None:
    cfg = ModelConfig(pm=pm)
    net = EccNet(cfg)
    assert count_parameters(net) == params
    assert [s.conv_size for s in net.shapes] == [56, 50, 44, 38][: cfg.num_layers]
    assert net(torch.zeros(2, cfg.num_scales, 60, 60)).shape == (2, 5)


def test_shapes_without_total_pool_and_with_1x1_conv() -> None:
    cfg = ModelConfig(pm="11-5-1", total_pool=False, parity="none")
    net = EccNet(cfg)
    assert net.shapes[-1].pool_size == 48  # 60 -5+1 -3+1 = 54, -5+1 -3+1 = 48
    assert count_parameters(net) == 832 + 25_632 + 48 * 48 * 32 * 10 + 10
    assert net(torch.zeros(3, 11, 60, 60)).shape == (3, 10)
    # stride 2: 60 -> 56 -> 27 -> 23 -> 11 -> 7 -> 3 -> (3 < 5: 1x1 conv) 3 -> 1
    cfg = ModelConfig(pm="5-3-2-1-1", pool_stride=2)
    net = EccNet(cfg)
    assert [s.kernel for s in net.shapes] == [5, 5, 5, 1]
    assert count_parameters(net) == 832 + 2 * 25_632 + conv_params(32, 1) + 165
    assert cfg.num_classes == 5 and cfg.num_layers == 4 and cfg.scales == (5, 3, 2, 1, 1)


def test_flops_per_image_demo() -> None:
    convs = 11 * 56**2 * 32 * 25 + 50**2 * 32 * 800 + 44**2 * 32 * 800 + 38**2 * 32 * 800
    assert EccNet(ModelConfig()).flops_per_image() == 2 * (convs + 32 * 5)


@pytest.mark.parametrize(("pm", "message"), [
    ("11-12-1", 'pm "11-12-1" must not increase: 11 -> 12. Example: 11-1-1-1-1'),
    ("11-a-1", "'a' is not a whole number"),
    ("11-1.5-1", "'1.5' is not a whole number"),
    ("11", 'pm "11" leaves no layers'),
    ("11-0-0", "has a zero"),
    ("", "is not a whole number"),
])
def test_bad_pm_is_refused(pm: str, message: str) -> None:
    with pytest.raises(ValueError, match="pm") as err:
        ModelConfig(pm=pm)
    assert message in str(err.value)
    assert "11-1-1-1-1" in str(err.value)


def test_bad_input_is_refused() -> None:
    cfg = ModelConfig(pm="11-1-1-1-1")
    # 18 -> 14 -> 12 -> 8 -> 6 -> 2: nothing left for the 3x3 pool of layer 2
    with pytest.raises(ValueError, match=r"layer 2: the 3x3 spatial max-pool would empty its 2x2 input"):
        ModelConfig(pm="11-1-1-1-1", total_pool=False).layer_shapes(18)
    with pytest.raises(ValueError, match=r"layer 0: a 5x5 convolution .* crop_size is 4"):
        EccNet(ModelConfig(), crop_size=4)
    with pytest.raises(ValueError, match="parity 'all' is not one of even, odd, none"):
        ModelConfig(parity="all")
    with pytest.raises(ValueError, match=r"expects float \(B, 11, 60, 60\), got torch.float32 \(2, 11, 30"):
        EccNet(cfg)(torch.zeros(2, 11, 30, 30))
    with pytest.raises(ValueError, match=r"got torch.uint8 \(2, 11, 60, 60\)"):
        EccNet(cfg)(torch.zeros(2, 11, 60, 60, dtype=torch.uint8))


def assert_matches_reference(net: EccNet, x: torch.Tensor) -> None:
    """The fast path's outputs and parameter gradients equal the original's op order (float64)."""
    fast, ref = net(x), reference_forward(net, x)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)
    params = list(net.parameters())
    g_fast = torch.autograd.grad(fast.square().sum(), params)
    g_ref = torch.autograd.grad(ref.square().sum(), params)
    for (name, _), a, b in zip(net.named_parameters(), g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize(("pm", "total_pool", "pool_stride", "crop"), SCHEMES)
def test_fast_path_equals_reference(pm: str, total_pool: bool, pool_stride: int, crop: int) -> None:
    cfg = ModelConfig(pm=pm, total_pool=total_pool, pool_stride=pool_stride)
    net = EccNet(cfg, crop, seed=1).double()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, cfg.num_scales, crop, crop, generator=gen, dtype=torch.double)
    assert_matches_reference(net, x)


def test_fast_path_equals_reference_float32() -> None:
    net = EccNet(ModelConfig(pm="11-7-5-3-1"), 30, seed=3)
    x = torch.randn(4, 11, 30, 30, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(net(x), reference_forward(net, x), rtol=1e-4, atol=1e-4)


def test_bf16_autocast_returns_float32_close_to_fp32() -> None:
    net = EccNet(ModelConfig(), seed=5)
    x = torch.randn(2, 11, 60, 60, generator=torch.Generator().manual_seed(6))
    ref = net(x)
    net.bf16 = True
    out = net(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0.05, atol=0.1 * ref.abs().max().item())


def test_init_statistics_and_seed() -> None:
    net = EccNet(ModelConfig(), seed=7)
    for name, p in net.named_parameters():
        if name.endswith("bias"):
            assert torch.all(p == 0.1), name
        else:
            assert p.abs().max() <= 0.2, name
            if p.numel() > 500:
                assert 0.07 < p.std() < 0.1, name  # std of N(0, 0.1) cut at 2 std: 0.088
                assert abs(p.mean()) < 0.01, name
    same = EccNet(ModelConfig(), seed=7)
    other = EccNet(ModelConfig(), seed=8)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), same.parameters(), strict=True))
    assert not torch.equal(net.layers[1].conv.weight, other.layers[1].conv.weight)


def test_build_is_the_one_constructor() -> None:
    """build() makes every model from its config: the eccentricity model and the DCNNs alike."""
    for cfg in (ModelConfig(), dcnn("progressive")):
        net = build(cfg, 60, seed=7)
        assert isinstance(net, EccNet) and net.cfg == cfg and net.crop_size == 60
        assert all(torch.equal(a, b) for a, b in
                   zip(net.parameters(), EccNet(cfg, 60, seed=7).parameters(), strict=True))
    assert build(ModelConfig(), 60, bf16=True).bf16
    with pytest.raises(TypeError, match="build takes a ModelConfig, got str: '11-1-1-1-1'"):
        build("11-1-1-1-1", 60)  # type: ignore[arg-type]


def test_loss_falls_on_a_tiny_problem() -> None:
    # class = which quadrant holds a bright blob, on 3 scales of 16x16 crops
    gen = torch.Generator().manual_seed(0)
    cfg = ModelConfig(pm="3-1-1", parity="even")
    net = build(cfg, 16, seed=0)
    y = torch.randint(0, 4, (64,), generator=gen)
    x = 0.1 * torch.randn(64, 3, 16, 16, generator=gen)
    for i, label in enumerate(y.tolist()):
        r, c = divmod(label, 2)
        x[i, :, 8 * r:8 * r + 6, 8 * c:8 * c + 6] += 1.0
    opt = torch.optim.Adagrad(net.parameters(), lr=0.03, initial_accumulator_value=0.1)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize(("pm", "total_pool"), [("11-1-1-1-1", True), ("11-7-5-3-1", False)])
def test_fast_path_equals_reference_with_ties(pm: str, total_pool: bool) -> None:
    # Stimuli are mostly a constant background: equal values across scales and positions, so
    # the max-pools see ties; any winner among identical patches gives the same gradients.
    cfg = ModelConfig(pm=pm, total_pool=total_pool)
    net = EccNet(cfg, 40, seed=1).double()
    x = torch.full((2, cfg.num_scales, 40, 40), -0.5, dtype=torch.double)
    x[0, :, 10:20, 12:18] = 0.5
    x[1, 3:, 25:35, 5:9] = 0.3
    assert_matches_reference(net, x)


def test_inference_path_equals_training_path() -> None:
    for pm in ("11-1-1-1-1", "11-7-5-3-1"):
        net = EccNet(ModelConfig(pm=pm), 30, seed=9)
        x = torch.randn(3, 11, 30, 30, generator=torch.Generator().manual_seed(10))
        with torch.no_grad():
            inference = net(x)
        torch.testing.assert_close(inference, net(x), rtol=0, atol=0)
        net.bf16 = True
        with torch.no_grad():
            inference = net(x)
        torch.testing.assert_close(inference, net(x), rtol=0, atol=0)


@pytest.mark.parametrize("window", [1, 2, 5, 11])
def test_scale_max_pool_sends_the_gradient_to_the_first_winner(window: int) -> None:
    gen = torch.Generator().manual_seed(11)
    x = torch.randint(0, 3, (2, 11, 4, 5, 5), generator=gen).double()  # many ties
    x = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3).requires_grad_()  # channels-last
    w = torch.randn(2, 12 - window, 4, 5, 5, generator=gen, dtype=torch.double)
    (ScaleMaxPool(window)(x) * w).sum().backward()
    ref_x = x.detach().clone().requires_grad_()
    ref = F.max_pool3d(ref_x.transpose(1, 2), (window, 1, 1), 1).transpose(1, 2)  # first max wins
    (ref * w).sum().backward()
    torch.testing.assert_close(ScaleMaxPool(window)(x), ref)
    torch.testing.assert_close(x.grad, ref_x.grad)


def test_bench_script_smoke() -> None:
    script = Path(__file__).resolve().parents[1] / "bench" / "train.py"
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}  # the bench sets them itself
    out = subprocess.run([sys.executable, str(script), "--batch", "4", "--steps", "1", "--matmul_n", "256",
                          "--threads", "1", "--no-reference", "--device", "cpu"],
                         capture_output=True, text=True, timeout=120, check=True, env=env).stdout
    assert "re-running with MALLOC_MMAP_MAX_=0" in out and "OMP_WAIT_POLICY=" in out, out
    assert "images/s" in out and "% of matmul" in out
