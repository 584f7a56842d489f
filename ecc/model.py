"""The eccentricity-dependent model: scale-shared convolutions, spatial and scale max-pools, a linear layer.

The original (TensorFlow, ../shared/reference/ORIGINAL.md "Model") takes (B, S, H, W, 1) crops and,
for each of its len(pm) - 1 layers, applies

    conv k x k shared across scales (VALID, + bias) -> ReLU -> spatial max-pool -> scale max-pool

then flattens (S, H, W, C) and applies one linear layer. `EccNet` computes the same function and the
same gradients, faster; `reference_forward` is the original's order written plainly with 3D ops,
the check for it (tests/test_model.py). What makes it fast on CPUs (bench/train.py):

* scales join the batch: the shared conv is one 2D convolution over B*S images, in channels-last
  layout throughout, which oneDNN and cuDNN run fastest and which needs no copies between ops;
* the max-pools commute with each other and with ReLU, so each layer pools scales first, then
  space, then applies ReLU, on maps S times smaller than the original's order;
* where scales are pooled, the conv and the scale max run together over chunks of images that fit
  in the cache, and keep only each output's winning scale (uint8) for the backward pass;
* glibc and OpenMP settings for the job's environment (`job_env`).
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.cli import arg

PARITIES = ("even", "odd", "none")


def num_classes(parity: str) -> int:
    """Classes of the task: the 10 digits with parity "none", else the 5 of one parity."""
    return 10 if str(parity) == "none" else 5
PM_EXAMPLE = "11-1-1-1-1"

# Environment for training and evaluation processes. glibc and OpenMP read it at start-up, so the
# launcher sets it (a running process cannot). Measured with bench/train.py (2 cores, batch 128):
# - MALLOC_ENV: glibc keeps freed memory for reuse instead of mmap-ing every large activation
#   afresh (page faults, zeroing) and trimming it back: a training step 1.46 s -> 1.13 s.
# - SHARED_CPU_ENV, for machines whose cores are shared (several jobs per node, other users):
#   OpenMP threads spinning at barriers starve the thread they wait for; with 2 other busy
#   processes a step took 9.0 s by default and 2.2 s with it; on idle cores it costs ~5%.
MALLOC_ENV = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": "100000000000",
    "MALLOC_TOP_PAD_": "1073741824",
}
SHARED_CPU_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def job_env(shared_cpus: bool = False) -> dict[str, str]:
    """Variables to add to a training or evaluation job's environment (see MALLOC_ENV)."""
    return {**MALLOC_ENV, **(SHARED_CPU_ENV if shared_cpus else {})}


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

    def __post_init__(self) -> None:
        for name in ("conv_kernel", "pool_kernel", "feats_per_layer", "pool_stride"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.total_pool, bool):
            raise ValueError(f"total_pool must be true or false, got {self.total_pool!r}")
        if self.parity not in PARITIES:
            raise ValueError(f"parity {self.parity!r} is not one of {', '.join(PARITIES)}")
        self.scales  # noqa: B018 (parses and checks pm)

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

    def check_input(self, num_scales: int, crop_size: int) -> None:
        """Refuse data this model cannot take: another number of scales, or crops too small."""
        if num_scales != self.num_scales:
            rest = "-".join(map(str, self.scales[1:]))
            fits = all(s <= num_scales for s in self.scales[1:])
            hint = f"{num_scales}-{rest}" if fits else f"{num_scales}-1"
            raise ValueError(f'pm "{self.pm}" starts with {self.num_scales} scales but the data has '
                             f"{num_scales}; start pm with {num_scales}, e.g. {hint}")
        self.layer_shapes(crop_size)

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


# ---------------------------------------------------------------------------- the paper's DCNN baselines
# The paper's DCNN (3 convolutions 5x5 stride 1 with 32 features, 3x3 spatial max-pools with a
# stride, one linear layer, 60x60 input) IS an EccNet with one scale: with pm "1-1-1-1" every
# scale max-pool has window 1 (a no-op), and a one-scale stimulus's only crop is the whole field
# resized to crop_size (ecc/stimuli.py). Its three pooling configurations are settings of
# pool_stride and total_pool. On 60x60 crops (tests/test_experiments.py, docs/experiments.md):
#   no_total_pool  maps 56->54, 50->48, 44->42; linear 42*42*32 = 56,448 -> 5; 334,341 parameters
#   progressive    maps 56->27, 23->11, 7->3;   linear 3*3*32 = 288 -> 5;       53,541 parameters
#   at_end         maps 56->54, 50->48, 44->1;  linear 32 -> 5;                 52,261 parameters
DCNN_POOLINGS = {
    "no_total_pool": {"pool_stride": 1, "total_pool": False},  # maps shrink only by VALID borders
    "progressive": {"pool_stride": 2, "total_pool": False},  # every pool halves the maps
    "at_end": {"pool_stride": 1, "total_pool": True},  # the last maps pooled over their whole extent
}
DCNN_PM = "1-1-1-1"


def dcnn(pooling: str, parity: str = "even", feats_per_layer: int = 32) -> ModelConfig:
    """The paper's DCNN with one of its pooling configurations (DCNN_POOLINGS), as a one-scale EccNet."""
    if pooling not in DCNN_POOLINGS:
        raise ValueError(f"DCNN pooling {pooling!r} is not one of {', '.join(DCNN_POOLINGS)}")
    return ModelConfig(pm=DCNN_PM, parity=parity, feats_per_layer=feats_per_layer, **DCNN_POOLINGS[pooling])


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
        y = _ScaleMax.apply(y, self.window)  # (B, S', H*W*C)
        return y.view(b, -1, h, w, c).permute(0, 1, 4, 2, 3)  # (B, S', C, H, W)

    def extra_repr(self) -> str:
        return f"window={self.window}"


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
            x = shared_conv_scale_max(x, self.conv, self.scale_pool.window)  # (B, S', C', H1, W1)
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
            x = _input_channels_last(x)  # (B, S, 1, H, W)
            for layer in self.layers:
                x = layer(x)  # (B, S', C, H', W')
            x = x.permute(0, 1, 3, 4, 2).flatten(1)  # (B, S*H*W*C), the original's order
            x = self.head(x)  # (B, num_classes)
        return x.float() if self.bf16 else x


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


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


# ---------------------------------------------------------------------------- the fast ops behind the modules
CHUNK_BYTES = 12 << 20  # CPU: conv output per chunk in the fused conv + scale max, to stay in cache


def _index_dtype(scales: int) -> torch.dtype:
    return torch.uint8 if scales <= 255 else torch.int64


def _scale_max_into(y: Tensor, window: int, out: Tensor, index: Tensor) -> None:
    """Sliding max over dim 1 of y (b, S, N), stride 1, into out (b, S', N), and into index the
    winning scale (the first one on ties, as a max-pool)."""
    s, s_out = y.shape[1], out.shape[1]
    if s_out == 1 and s <= 128:  # all scales at once, in few float passes (bool ones are slower)
        torch.amax(y, 1, keepdim=True, out=out)
        # s where y is the max, s + S elsewhere (sign(y - max) is 0 or -1): the min is the first winner
        scale = torch.arange(s, dtype=y.dtype, device=y.device).view(1, s, 1)
        rank = torch.sub(y, out).sign_().mul_(-s).add_(scale)  # in place: fewer passes over y
        index.copy_(rank.amin(1, keepdim=True))
        return
    out.copy_(y[:, :s_out])
    index.zero_()
    for k in range(1, window):
        cand = y[:, k:k + s_out]
        better = torch.gt(cand, out)
        torch.maximum(out, cand, out=out)
        index.masked_fill_(better, k)
    if s_out > 1:
        index += torch.arange(s_out, dtype=index.dtype, device=index.device).view(1, s_out, 1)


def _scale_max_values_into(y: Tensor, window: int, out: Tensor) -> None:
    """_scale_max_into without the winners (inference)."""
    s_out = out.shape[1]
    if s_out == 1:
        torch.amax(y, 1, keepdim=True, out=out)
        return
    out.copy_(y[:, :s_out])
    for k in range(1, window):
        torch.maximum(out, y[:, k:k + s_out], out=out)


def _scatter_winners(grad: Tensor, index: Tensor, scales: int) -> Tensor:
    """Backward of _scale_max_into: (b, S', N) gradients back to their winners in (b, S, N)."""
    grad_in = grad.new_zeros(grad.shape[0], scales, grad.shape[2])
    if grad.shape[1] == 1:
        return grad_in.scatter_(1, index.long(), grad)
    return grad_in.scatter_add_(1, index.long(), grad)  # overlapping windows can share a winner


class _ScaleMax(torch.autograd.Function):
    """Sliding max over dim 1 of (B, S, N), stride 1; saves only each output's winning scale."""

    @staticmethod
    def forward(ctx, x: Tensor, window: int) -> Tensor:  # (B, S, N) -> (B, S - window + 1, N)
        b, s, n = x.shape
        out = x.new_empty(b, s - window + 1, n)
        index = torch.empty(out.shape, dtype=_index_dtype(s), device=x.device)
        _scale_max_into(x, window, out, index)
        ctx.save_for_backward(index)
        ctx.scales = s
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (index,) = ctx.saved_tensors
        return _scatter_winners(grad.contiguous(), index, ctx.scales), None


def _conv_scale_max_chunks(x: Tensor, weight: Tensor, bias: Tensor, window: int, chunk: int,
                           with_index: bool) -> tuple[Tensor, Tensor | None]:
    """Conv then sliding scale max, `chunk` images at a time: (B, S, C, H, W) -> (B, S', C', H', W')
    (stored channels-last) and, with_index, the winning scales (B, S', H'*W'*C')."""
    b, s, _, h, w = x.shape
    co, k = weight.shape[0], weight.shape[-1]
    ho, wo = h - k + 1, w - k + 1
    out = x.new_empty(b, s - window + 1, ho * wo * co)  # (B, S', H'*W'*C')
    index = torch.empty(out.shape, dtype=_index_dtype(s), device=x.device) if with_index else None
    weight = weight.to(memory_format=torch.channels_last)
    for i in range(0, b, chunk):
        y = F.conv2d(x[i:i + chunk].flatten(0, 1), weight, bias)  # (c*S, C', H', W')
        y = y.permute(0, 2, 3, 1).reshape(-1, s, ho * wo * co)  # (c, S, H'*W'*C')
        if index is None:
            _scale_max_values_into(y, window, out[i:i + chunk])
        else:
            _scale_max_into(y, window, out[i:i + chunk], index[i:i + chunk])
    return out.view(b, -1, ho, wo, co).permute(0, 1, 4, 2, 3), index


def _autocast_inputs(x: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Cast to the autocast dtype where autocast is on (the fused op runs with it off)."""
    if not torch.is_autocast_enabled(x.device.type):
        return x, weight, bias
    dtype = torch.get_autocast_dtype(x.device.type)
    return x.to(dtype), weight.to(dtype), bias.to(dtype)


class _SharedConvScaleMax(torch.autograd.Function):
    """ScaleSharedConv then ScaleMaxPool in one pass over chunks of images, so the conv output
    (S times larger than what the scale max keeps) never leaves the cache; its backward rebuilds
    each chunk's sparse gradient from the winners (uint8) and calls the convolution's backward."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, window: int, chunk: int) -> Tensor:
        # x: (B, S, C, H, W) stored (B, S, H, W, C); out: (B, S', C', H', W') stored the same way
        ctx.dtypes = x.dtype, weight.dtype
        x, weight, bias = _autocast_inputs(x, weight, bias)
        weight = weight.to(memory_format=torch.channels_last)  # not contiguous(): a no-op for C=1
        with torch.autocast(x.device.type, enabled=False):
            out, index = _conv_scale_max_chunks(x, weight, bias, window, chunk, with_index=True)
        ctx.save_for_backward(x, weight, index)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor, Tensor, None, None]:
        x, weight, index = ctx.saved_tensors
        chunk = ctx.chunk
        b, s = x.shape[:2]
        co, ho, wo = grad.shape[2:]
        grad = grad.permute(0, 1, 3, 4, 2).reshape(index.shape).to(x.dtype)  # (B, S', H'*W'*C')
        need_x = ctx.needs_input_grad[0]
        grad_x = torch.empty_like(x) if need_x else None
        x_dtype, w_dtype = ctx.dtypes
        acc = torch.promote_types(w_dtype, torch.float32)  # sums over chunks in at least fp32
        grad_w = torch.zeros(weight.shape, dtype=acc, device=x.device)
        grad_b = torch.zeros(co, dtype=acc, device=x.device)
        for i in range(0, b, chunk):
            g = _scatter_winners(grad[i:i + chunk], index[i:i + chunk], s)  # (c, S, H'*W'*C')
            gx, gw, gb = torch.ops.aten.convolution_backward(
                g.view(-1, ho, wo, co).permute(0, 3, 1, 2),  # (c*S, C', H', W'), channels-last
                x[i:i + chunk].flatten(0, 1), weight, [co], [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                [need_x, True, True])
            if need_x:
                grad_x[i:i + chunk] = gx.unflatten(0, (-1, s))
            grad_w += gw
            grad_b += gb
        if grad_x is not None:
            grad_x = grad_x.to(x_dtype)
        return grad_x, grad_w.to(w_dtype), grad_b.to(w_dtype), None, None


def shared_conv_scale_max(x: Tensor, conv: ScaleSharedConv, window: int) -> Tensor:
    """scale_pool(conv(x)) for ScaleMaxPool(window), fused: (B, S, C, H, W) -> (B, S', C', H', W')."""
    b, s = x.shape[:2]
    if x.device.type == "cpu":
        per_image = s * conv.weight.shape[0] * (x.shape[-1] - conv.weight.shape[-1] + 1) ** 2 * 4
        chunk = max(1, CHUNK_BYTES // per_image)
    else:  # GPUs have no cache to fit; one chunk
        chunk = b
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, conv.weight, conv.bias)):
        return _SharedConvScaleMax.apply(x, conv.weight, conv.bias, window, chunk)
    x, weight, bias = _autocast_inputs(x, conv.weight, conv.bias)  # inference: no winners kept
    with torch.autocast(x.device.type, enabled=False):
        return _conv_scale_max_chunks(x, weight, bias, window, chunk, with_index=False)[0]


def _input_channels_last(x: Tensor) -> Tensor:
    """(B, S, H, W) -> (B, S, 1, H, W) with channels-last strides: the channel stride must be 1 for
    oneDNN to pick its channels-last kernels (4x faster backward for the 1-channel first layer),
    and its convolution backward follows the weight's layout, so that one is converted with .to()."""
    b, s, h, w = x.shape
    return x.contiguous().as_strided((b, s, 1, h, w), (s * h * w, h * w, 1, w, 1))
