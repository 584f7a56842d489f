"""The fast paths behind EccNet's layers: the scale max-pool and the fused conv + scale max-pool.

What makes the model fast on CPUs (bench/train.py), with the same function and gradients as the
original's op order (ecc.model.reference_forward; tests/test_model.py):

* scales join the batch: the shared conv is one 2D convolution over B*S images, in channels-last
  layout throughout, which oneDNN and cuDNN run fastest and which needs no copies between ops;
* where scales are pooled, the conv and the scale max run together over chunks of images that fit
  in the cache (CHUNK_BYTES), and keep only each output's winning scale (uint8) for the backward
  pass, which rebuilds each chunk's sparse gradient and calls the convolution's backward.

Tensors here are (B, S, C, H, W) stored (B, S, H, W, C), or flattened to (B, S, N = H*W*C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

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
    """The scale-shared convolution then the scale max in one pass over chunks of images, so the conv output
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


def scale_max(x: Tensor, window: int) -> Tensor:
    """Sliding max over `window` scales, stride 1: (B, S, N) -> (B, S - window + 1, N); the
    backward sends each gradient to the first winning scale, as a max-pool does."""
    return _ScaleMax.apply(x, window)


def shared_conv_scale_max(x: Tensor, weight: Tensor, bias: Tensor, window: int) -> Tensor:
    """A scale-shared convolution (VALID, + bias) then a sliding max over `window` scales, fused:
    (B, S, C, H, W) stored channels-last -> (B, S', C', H', W') stored the same way."""
    b, s = x.shape[:2]
    if x.device.type == "cpu":
        per_image = s * weight.shape[0] * (x.shape[-1] - weight.shape[-1] + 1) ** 2 * 4
        chunk = max(1, CHUNK_BYTES // per_image)
    else:  # GPUs have no cache to fit; one chunk
        chunk = b
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, weight, bias)):
        return _SharedConvScaleMax.apply(x, weight, bias, window, chunk)
    x, weight, bias = _autocast_inputs(x, weight, bias)  # inference: no winners kept
    with torch.autocast(x.device.type, enabled=False):
        return _conv_scale_max_chunks(x, weight, bias, window, chunk, with_index=False)[0]


def input_channels_last(x: Tensor) -> Tensor:
    """(B, S, H, W) -> (B, S, 1, H, W) with channels-last strides: the channel stride must be 1 for
    oneDNN to pick its channels-last kernels (4x faster backward for the 1-channel first layer),
    and its convolution backward follows the weight's layout, so that one is converted with .to()."""
    b, s, h, w = x.shape
    return x.contiguous().as_strided((b, s, 1, h, w), (s * h * w, h * w, 1, w, 1))
