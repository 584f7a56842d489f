"""The eccentricity-dependent model: ModelConfig, EccNet (scale-shared conv, spatial and scale max-pools, linear), build().

The original (TensorFlow, docs/original.md "Model") takes (B, S, H, W, 1) crops
(S scales of one image, each resized to H x W) and, for each of its len(pm) - 1 layers, applies

    conv k x k shared across scales (VALID, + bias) -> ReLU -> spatial max-pool -> scale max-pool

where the scale max-pool leaves the number of scales the pooling scheme `pm` says (11-1-1-1-1:
all 11 pooled in the first layer), then flattens (S, H, W, C) and applies one linear layer.
`EccNet` computes the same function and the same gradients, faster (the max-pools commute with
each other and with ReLU, so each layer pools scales first, then space, then applies ReLU, on
maps S times smaller; the fused ops are in ecc/fused.py); `reference_forward` is the original's
order written plainly with 3D ops, the check for it (tests/test_model.py). The paper's DCNN
baselines are one-scale EccNets (`dcnn`). Every model is built by `build`.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import factory as factories
from .factory import count_parameters  # noqa: F401 (re-exported: the size of any network)
from .fused import input_channels_last, scale_max, shared_conv_scale_max
from .model_config import (  # noqa: F401 (re-exported: the config's users may import it from here)
    DCNN_PM,
    DCNN_POOLINGS,
    ECCNET_FIELDS,
    PM_EXAMPLE,
    LayerShape,
    ModelConfig,
    dcnn,
    num_classes,
)


# ---------------------------------------------------------------------------- the model
class ScaleSharedConv(nn.Module):
    """One k x k convolution (VALID, + bias) applied to every scale with the same weights."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.empty(out_channels))

    def forward(self, x: Tensor) -> Tensor:  # (B, S, C, H, W) -> (B, S, C', H', W')
        b, s = x.shape[:2]
        # scales join the batch: one 2D convolution over B*S images, channels-last (oneDNN's and
        # cuDNN's fast layout), so a (B, S, H, W, C) tensor needs no copy.
        y = F.conv2d(x.flatten(0, 1), self.weight.to(memory_format=torch.channels_last), self.bias)
        return y.unflatten(0, (b, s))  # (B, S, C', H', W')


class SpatialMaxPool(nn.Module):
    """k x k max-pool with a stride, VALID, on every scale; or (total) a max over the whole map."""

    def __init__(self, kernel: int, stride: int, total: bool) -> None:
        super().__init__()
        self.kernel, self.stride, self.total = kernel, stride, total

    def forward(self, x: Tensor) -> Tensor:  # (B, S, C, H, W) -> (B, S, C, H', W')
        if self.total:  # not amax (whose gradient splits ties) nor a full-size max_pool2d (copies)
            y = F.adaptive_max_pool2d(x.flatten(0, 1), 1)  # (B*S, C, 1, 1)
        else:
            y = F.max_pool2d(x.flatten(0, 1), self.kernel, self.stride)  # (B*S, C, H', W')
        return y.unflatten(0, x.shape[:2])

    def extra_repr(self) -> str:
        return "total" if self.total else f"kernel={self.kernel}, stride={self.stride}"


class ScaleMaxPool(nn.Module):
    """Max over `window` neighbouring scales, stride 1, VALID: S -> S - window + 1 scales."""

    def __init__(self, window: int) -> None:
        super().__init__()
        self.window = window

    def forward(self, x: Tensor) -> Tensor:  # (B, S, C, H, W) -> (B, S', C, H, W)
        if self.window == 1:
            return x
        b, s, c, h, w = x.shape
        y = x.permute(0, 1, 3, 4, 2).reshape(b, s, h * w * c)  # (B, S, H*W*C), a view when channels-last
        y = scale_max(y, self.window)  # (B, S', H*W*C)
        return y.view(b, -1, h, w, c).permute(0, 1, 4, 2, 3)  # (B, S', C, H, W)

    def extra_repr(self) -> str:
        return f"window={self.window}"


class EccLayer(nn.Module):
    """conv -> ReLU -> spatial max-pool -> scale max-pool, computed in a cheaper, equal order."""

    def __init__(self, shape: LayerShape, cfg: ModelConfig, last: bool) -> None:
        super().__init__()
        self.conv = ScaleSharedConv(shape.in_channels, cfg.feats_per_layer, shape.kernel)
        self.scale_pool = ScaleMaxPool(shape.scale_window)
        self.spatial_pool = SpatialMaxPool(cfg.pool_kernel, cfg.pool_stride, last and cfg.total_pool)

    def forward(self, x: Tensor) -> Tensor:  # (B, S, C, H, W) -> (B, S', C', H', W')
        # Max-pools commute with each other and with the monotone ReLU, and the gradient still
        # flows to the same winner, so pooling scales first (11x fewer maps in the demo), then
        # space, then ReLU on the smallest map is the original's function, for less work.
        if self.scale_pool.window > 1:  # the same two steps, fused to keep the conv output in cache
            x = shared_conv_scale_max(x, self.conv.weight, self.conv.bias,
                                      self.scale_pool.window)  # (B, S', C', H1, W1)
        else:
            x = self.conv(x)  # (B, S, C', H1, W1)
        x = self.spatial_pool(x)  # (B, S', C', H', W')
        return F.relu(x)


class EccNet(nn.Module):
    """The eccentricity-dependent model: (B, S, H, W) float crops -> (B, num_classes) logits.

    `seed` (an int or a torch.Generator) draws the original's initialisation: weights truncated
    normal, std 0.1, cut at 2 std; biases 0.1. `bf16` runs the forward under bfloat16 autocast
    (CPU or CUDA); logits are float32 either way."""

    def __init__(self, cfg: ModelConfig, crop_size: int = 60, *, seed: int | torch.Generator = 0,
                 bf16: bool = False) -> None:
        super().__init__()
        self.cfg, self.crop_size, self.bf16 = cfg, crop_size, bf16
        self.shapes = cfg.layer_shapes(crop_size)
        self.layers = nn.ModuleList(
            EccLayer(s, cfg, last=s.index == cfg.num_layers - 1) for s in self.shapes)
        self.head = nn.utils.skip_init(nn.Linear, cfg.features(crop_size), cfg.num_classes)
        self.reset_parameters(seed)

    def reset_parameters(self, seed: int | torch.Generator = 0) -> None:
        gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            with torch.no_grad():
                if name.endswith("bias"):
                    p.fill_(0.1)
                else:  # drawn on the CPU so a seed gives the same weights on every device
                    w = torch.empty(p.shape)
                    nn.init.trunc_normal_(w, std=0.1, a=-0.2, b=0.2, generator=gen)
                    p.copy_(w)

    def flops_per_image(self) -> int:
        """Forward FLOPs per image (2 x multiply-adds of convolutions and the linear layer)."""
        return self.cfg.flops_per_image(self.crop_size)

    def forward(self, x: Tensor) -> Tensor:  # (B, S, H, W) -> (B, num_classes)
        if x.dim() != 4 or not x.is_floating_point() or tuple(x.shape[1:]) != (
                self.cfg.num_scales, self.crop_size, self.crop_size):
            raise ValueError(f"EccNet for pm {self.cfg.pm} and {self.crop_size}x{self.crop_size} crops "
                             f"expects float (B, {self.cfg.num_scales}, {self.crop_size}, {self.crop_size}), "
                             f"got {x.dtype} {tuple(x.shape)}")
        autocast = (torch.autocast(x.device.type, dtype=torch.bfloat16) if self.bf16
                    else contextlib.nullcontext())
        with autocast:
            x = input_channels_last(x)  # (B, S, 1, H, W)
            for layer in self.layers:
                x = layer(x)  # (B, S', C, H', W')
            x = x.permute(0, 1, 3, 4, 2).flatten(1)  # (B, S*H*W*C), the original's order
            x = self.head(x)  # (B, num_classes)
        return x.float() if self.bf16 else x


# ---------------------------------------------------------------------------- building a model
def build(cfg: ModelConfig, crop_size: int, *, seed: int | torch.Generator = 0, bf16: bool = False,
          num_scales: int | None = None) -> nn.Module:
    """The model `cfg` describes, for crop_size x crop_size crops (`num_scales` of them: the
    stimulus', needed by a factory's `scales` view), with its initial weights drawn from `seed`;
    `bf16` runs its forward under bfloat16 autocast (logits stay float32).

    Every model is built here: training, evaluation, the benchmark and the tests that train or
    evaluate one. Two families: EccNet (the paper's DCNNs are configurations of it, dcnn) and, when
    cfg.factory names one, a network of your own (ecc/factory.py), wrapped to take the same crops.
    A new family touches two things: a ModelConfig value that names it (a field whose default is
    today's family keeps every existing run's hash, core.identity.non_default) and its nn.Module
    class, taking (cfg, crop_size, seed=, bf16=), chosen by that value here."""
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"build takes a ModelConfig, got {type(cfg).__name__}: {cfg!r}")
    if cfg.factory:
        if num_scales is None and cfg.view == "scales":
            raise ValueError(f"factory {cfg.factory!r} with view scales needs num_scales (the stimulus')")
        return factories.make(cfg.factory, cfg.factory_kwargs, cfg.view, cfg.num_classes, crop_size,
                              num_scales or 1, seed=seed, bf16=bf16)
    return EccNet(cfg, crop_size, seed=seed, bf16=bf16)


# ---------------------------------------------------------------------------- the check
def reference_forward(net: EccNet, x: Tensor) -> Tensor:
    """The original's op order, plainly, with 3D ops over (scale, height, width) and net's weights."""
    x = x.unsqueeze(1)  # (B, 1, S, H, W): channels first, scales as depth
    for layer in net.layers:
        x = F.conv3d(x, layer.conv.weight.unsqueeze(2), layer.conv.bias)  # kernel (1, k, k)
        x = F.relu(x)
        if layer.spatial_pool.total:
            x = F.max_pool3d(x, (1, *x.shape[-2:]))
        else:
            k, st = layer.spatial_pool.kernel, layer.spatial_pool.stride
            x = F.max_pool3d(x, (1, k, k), (1, st, st))
        x = F.max_pool3d(x, (layer.scale_pool.window, 1, 1), 1)  # (B, C, S', H', W')
    x = x.permute(0, 2, 3, 4, 1).flatten(1)  # (B, S*H*W*C)
    return net.head(x)
