"""The eccentricity-dependent model: ModelConfig, EccNet (scale-shared conv, spatial and scale max-pools, linear), build().

The original (TensorFlow, ../shared/reference/ORIGINAL.md "Model") takes (B, S, H, W, 1) crops
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
import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.cli import arg, check_choice, check_choices

from . import factory as factories
from .fused import input_channels_last, scale_max, shared_conv_scale_max
from .sources import PARITIES

PM_EXAMPLE = "11-1-1-1-1"


def num_classes(parity: str) -> int:
    """Classes of the task: the 10 digits with parity "none", else the 5 of one parity."""
    return 10 if str(parity) == "none" else 5


@dataclass(frozen=True)
class LayerShape:
    """Sizes of one layer for a given input: scales in/out, kernel, spatial sides after conv/pool."""

    index: int
    in_channels: int
    kernel: int  # conv_kernel, or 1 once the incoming map is smaller than conv_kernel
    scales_in: int
    scales_out: int
    size_in: int
    conv_size: int
    pool_size: int  # 1 on a total-pooled last layer

    @property
    def scale_window(self) -> int:
        return self.scales_in - self.scales_out + 1


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the eccentricity-dependent model (the original's flags and defaults)."""

    pm: str = arg(PM_EXAMPLE, "pooling scheme across scales: the number of scales left after each layer, "
                  "starting with the input's (= --num_scales); never increasing; len(pm) - 1 layers")
    conv_kernel: int = arg(5, "side of the convolution kernels (1x1 once a map is smaller than this)")
    pool_kernel: int = arg(3, "side of the spatial max-pool windows")
    feats_per_layer: int = arg(32, "feature maps per layer")
    total_pool: bool = arg(True, "max-pool the last layer's maps over their whole extent (to 1x1)")
    pool_stride: int = arg(1, "stride of the spatial max-pools")
    parity: str = arg("even", "digits to classify: even or odd ones (5 classes), or all (none: 10)",
                      choices=PARITIES)
    factory: str = arg("", "a network of your own instead of the eccentricity model: MODULE:FUNCTION, "
                       "FILE.py:FUNCTION or timm:NAME (ecc/factory.py); empty: the eccentricity model")
    factory_kwargs: str = arg("", "the factory's own keyword arguments, a JSON object (a sweep may pass a dict)")
    view: str = arg("scales", "what a factory's network sees: scales (the multiscale crops as channels, as the "
                    "eccentricity model) or field (the whole field at one scale, as the DCNN)",
                    choices=factories.VIEWS)

    def __post_init__(self) -> None:
        self._check_factory()
        for name in ("conv_kernel", "pool_kernel", "feats_per_layer", "pool_stride"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.total_pool, bool):
            raise ValueError(f"total_pool must be true or false, got {self.total_pool!r}")
        check_choices(self)
        self.scales  # noqa: B018 (parses and checks pm)

    def _check_factory(self) -> None:
        """A factory's reference and arguments in their stored form; the eccentricity model's own
        fields stay at their defaults beside a factory (one network, one identity)."""
        object.__setattr__(self, "factory_kwargs", factories.canonical_kwargs(self.factory_kwargs))
        if not self.factory:
            for name in ("factory_kwargs", "view"):
                if getattr(self, name) != ModelConfig.__dataclass_fields__[name].default:
                    raise ValueError(f"{name} {getattr(self, name)!r} is for a factory model; set factory too "
                                     f"(e.g. {factories.EXAMPLE})")
            return
        object.__setattr__(self, "factory", factories.normalize_ref(self.factory))
        own = [n for n in ECCNET_FIELDS if getattr(self, n) != ModelConfig.__dataclass_fields__[n].default]
        if own:
            raise ValueError(f"factory {self.factory!r} builds its own network: {', '.join(own)} "
                             "(the eccentricity model's) must keep their defaults")

    @property
    def scales(self) -> tuple[int, ...]:
        """Scales entering each layer and left after the last: (11, 1, 1, 1, 1) for 11-1-1-1-1."""
        pm = self.pm
        if not isinstance(pm, str):
            raise ValueError(f"pm must be a string like {PM_EXAMPLE}, got {pm!r}")
        parts = pm.split("-")
        for part in parts:
            if not part.strip().isdigit():
                raise ValueError(f'pm "{pm}": {part!r} is not a whole number. Example: {PM_EXAMPLE}')
        scales = tuple(int(p) for p in parts)
        if len(scales) < 2:
            raise ValueError(f'pm "{pm}" leaves no layers: it needs at least two numbers '
                             f"(input scales, then scales after each layer). Example: {PM_EXAMPLE}")
        if 0 in scales:
            raise ValueError(f'pm "{pm}" has a zero: every layer keeps at least one scale. '
                             f"Example: {PM_EXAMPLE}")
        for a, b in itertools.pairwise(scales):
            if b > a:
                raise ValueError(f'pm "{pm}" must not increase: {a} -> {b}. Example: {PM_EXAMPLE}')
        return scales

    @property
    def num_scales(self) -> int:
        return self.scales[0]

    @property
    def num_layers(self) -> int:
        return len(self.scales) - 1

    @property
    def num_classes(self) -> int:
        return num_classes(self.parity)

    def layer_shapes(self, crop_size: int) -> tuple[LayerShape, ...]:
        """Every layer's sizes for crop_size x crop_size inputs; refuses sizes that empty a map."""
        if not isinstance(crop_size, int) or isinstance(crop_size, bool) or crop_size <= 0:
            raise ValueError(f"crop_size must be a positive integer, got {crop_size!r}")
        shapes, size, channels = [], crop_size, 1
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            kernel = self.conv_kernel if i == 0 or size >= self.conv_kernel else 1
            if size < kernel:
                need = f"{kernel}x{kernel}"
                raise ValueError(f"layer {i}: a {need} convolution needs at least a {need} map, but "
                                 f"crop_size is {crop_size}; use crop_size >= {kernel}")
            conv_size = size - kernel + 1
            if last and self.total_pool:
                pool_size = 1
            elif conv_size < self.pool_kernel:
                raise ValueError(
                    f"layer {i}: the {self.pool_kernel}x{self.pool_kernel} spatial max-pool would empty its "
                    f"{conv_size}x{conv_size} input (crop_size {crop_size}, pm {self.pm}, pool_stride "
                    f"{self.pool_stride}); use a larger crop_size, fewer layers or total_pool")
            else:
                pool_size = (conv_size - self.pool_kernel) // self.pool_stride + 1
            shapes.append(LayerShape(i, channels, kernel, self.scales[i], self.scales[i + 1], size,
                                     conv_size, pool_size))
            size, channels = pool_size, self.feats_per_layer
        return tuple(shapes)

    def features(self, crop_size: int) -> int:
        """Inputs of the linear layer: the last layer's S * H * W * C."""
        last = self.layer_shapes(crop_size)[-1]
        return last.scales_out * last.pool_size**2 * self.feats_per_layer

    def flops_per_image(self, crop_size: int) -> int:
        """Forward multiply-adds x 2 of the convolutions and the linear layer (pools and ReLUs ignored)."""
        flops = 0
        for s in self.layer_shapes(crop_size):
            flops += 2 * s.scales_in * s.conv_size**2 * self.feats_per_layer * s.in_channels * s.kernel**2
        return flops + 2 * self.features(crop_size) * self.num_classes


ECCNET_FIELDS = ("pm", "conv_kernel", "pool_kernel", "feats_per_layer", "total_pool", "pool_stride")


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


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------- the paper's DCNN baselines
# The paper's DCNN (3 convolutions 5x5 stride 1 with 32 features, 3x3 spatial max-pools with a
# stride, one linear layer, 60x60 input) IS an EccNet with one scale: with pm "1-1-1-1" every
# scale max-pool has window 1 (a no-op), and a one-scale stimulus's only crop is the whole field
# resized to crop_size (ecc/stimuli.py). Its three pooling configurations are settings of
# pool_stride and total_pool; the original's total_pool defaults to true, and the paper gives the
# progressive network's map sides as 60-27-11-1 (pool stride 2, then the last map pooled whole).
# On 60x60 crops (tests/test_experiments.py, docs/experiments.md), map sides in -> conv -> pool:
#   no_total_pool  60, 56->54, 50->48, 44->42; linear 42*42*32 = 56,448 -> 5; 334,341 parameters
#   progressive    60, 56->27, 23->11, 7->1;   linear 32 -> 5;                 52,261 parameters
#   at_end         60, 56->54, 50->48, 44->1;  linear 32 -> 5;                 52,261 parameters
DCNN_POOLINGS = {
    "no_total_pool": {"pool_stride": 1, "total_pool": False},  # maps shrink only by VALID borders
    "progressive": {"pool_stride": 2, "total_pool": True},  # every pool halves the maps, the last pools them whole
    "at_end": {"pool_stride": 1, "total_pool": True},  # the last maps pooled over their whole extent
}
DCNN_PM = "1-1-1-1"


def dcnn(pooling: str, parity: str = "even", feats_per_layer: int = 32) -> ModelConfig:
    """The paper's DCNN with one of its pooling configurations (DCNN_POOLINGS): a configuration of
    the EccNet family (one scale), built by `build` like any other."""
    if pooling not in DCNN_POOLINGS:
        check_choice("DCNN pooling", pooling, DCNN_POOLINGS)
    return ModelConfig(pm=DCNN_PM, parity=parity, feats_per_layer=feats_per_layer, **DCNN_POOLINGS[pooling])


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
