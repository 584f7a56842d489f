"""Networks of your own: a factory named by import path, file or timm name, loaded, checked, and wrapped.

A factory reference is one of
  package.module:function     imported from sys.path (`mylab.nets:resnet_small`)
  path/to/file.py:function    a file anywhere (a relative path is taken from the current folder
                              and stored absolute, so jobs find it from any folder)
  timm:NAME                   a timm model by name, trained from scratch (optional: pip install timm)
It is called with keyword arguments (only those its signature takes, all of them when it takes
**kwargs) and returns an nn.Module mapping a float batch to (B, num_classes) logits:
  num_classes   classes of the task (5 for one parity, 10 for all digits)
  in_chans      input channels: the number of scales for the `scales` view, 1 for `field`
  input_size    side of the square input (the stimulus' crop_size)
  view          `scales`: the multiscale crops (B, S, H, W), scales as channels, as the eccentricity
                model sees them; `field`: the whole field at one scale resized to the input,
                (B, 1, H, W), as the paper's DCNN sees it (the last, widest crop)
plus the sweep's own keyword arguments (ModelConfig.factory_kwargs). timm gets num_classes, in_chans
and img_size where the model takes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from core.identity import file_digest

from .factory_ref import (  # noqa: F401 (re-exported: a factory's whole interface is here)
    EXAMPLE,
    STANDARD_ARGS,
    TIMM,
    VIEWS,
    FactoryError,
    canonical_kwargs,
    normalize_ref,
)


# ---------------------------------------------------------------------------- loading
def _file_module(path: str, ref: str) -> ModuleType:
    name = "crowding_factory_" + hashlib.sha1(path.encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    if not os.path.isfile(path):
        raise FactoryError(f"factory {ref!r}: cannot import {path}: no such file")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise FactoryError(f"factory {ref!r}: cannot import {path} ({type(e).__name__}: {e})") from e
    return module


def timm_module() -> ModuleType:
    """timm, or a FactoryError that says what to install."""
    try:
        return importlib.import_module("timm")
    except Exception as e:  # ImportError, or torchvision built for another torch (RuntimeError, AttributeError)
        raise FactoryError(
            f"timm models need timm, which cannot be imported here ({type(e).__name__}: {e}); install it with a "
            f"torchvision built for torch {torch.__version__.split('+')[0]}: pip install timm torchvision "
            "(the pair torch documents for this version)") from None


def _timm_create(timm: ModuleType, name: str, kw: dict[str, Any]) -> nn.Module:
    """A timm model from scratch; img_size only where the model takes it (a ViT does, a ResNet does not)."""
    try:
        return timm.create_model(name, pretrained=False, **kw)
    except TypeError as e:
        if "img_size" not in str(e) or "img_size" not in kw:
            raise
        return timm.create_model(name, pretrained=False, **{k: v for k, v in kw.items() if k != "img_size"})


def load(ref: str) -> Callable[..., Any]:
    """The factory function a reference names (FactoryError when it cannot be imported or called)."""
    ref = normalize_ref(ref)
    if ref.startswith(TIMM):
        timm, name = timm_module(), ref[len(TIMM):]
        if not timm.is_model(name):
            raise FactoryError(f"factory {ref!r}: timm has no model {name!r} (timm.list_models() lists them)")
        return lambda **kw: _timm_create(timm, name, kw)
    target, _, attr = ref.rpartition(":")
    if target.endswith(".py"):
        module = _file_module(target, ref)
    else:
        try:
            module = importlib.import_module(target)
        except Exception as e:
            raise FactoryError(f"factory {ref!r}: cannot import module {target} ({type(e).__name__}: {e})") from None
    if not hasattr(module, attr):
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise FactoryError(f"factory {ref!r}: {target} has no attribute {attr!r} (callables there: "
                           f"{', '.join(names) or 'none'})")
    fn = getattr(module, attr)
    if not callable(fn):
        raise FactoryError(f"factory {ref!r}: {target}:{attr} is not callable (it is a {type(fn).__name__})")
    return fn


def source(ref: str) -> dict[str, str]:
    """Provenance of a factory: its source file and that file's sha256 (timm: its version)."""
    ref = normalize_ref(ref)
    if ref.startswith(TIMM):
        return {"factory_source": "timm", "factory_sha256": f"timm {timm_module().__version__}"}
    target = ref.rpartition(":")[0]
    fn = load(ref)  # the launch's one-line errors: no such file, cannot import, no attribute
    try:
        path = target if target.endswith(".py") else inspect.getsourcefile(fn)
    except TypeError:  # a callable object rather than a function: its module's file
        path = inspect.getsourcefile(sys.modules[type(fn).__module__])
    if not path or not os.path.isfile(path):
        raise FactoryError(f"factory {ref!r}: no source file to record ({path!r})")
    return {"factory_source": str(Path(path).resolve()), "factory_sha256": file_digest(path)}


# ---------------------------------------------------------------------------- the network
class FactoryNet(nn.Module):
    """A factory's network behind the study's input: (B, S, H, W) crops -> its view -> (B, num_classes) logits."""

    def __init__(self, net: nn.Module, view: str, bf16: bool = False) -> None:
        super().__init__()
        self.net, self.view, self.bf16 = net, view, bf16

    def forward(self, x: Tensor) -> Tensor:  # (B, S, H, W) -> (B, num_classes)
        if self.view == "field":
            x = x[:, -1:]  # (B, 1, H, W): the widest crop is the whole field resized to the input
        autocast = (torch.autocast(x.device.type, dtype=torch.bfloat16) if self.bf16
                    else contextlib.nullcontext())
        with autocast:
            logits = self.net(x)
        return logits.float() if self.bf16 else logits


def call_args(fn: Callable[..., Any], ref: str, offered: Mapping[str, Any]) -> dict[str, Any]:
    """The standard arguments `fn` takes (all of them when it takes **kwargs)."""
    if ref.startswith(TIMM):  # timm's create_model passes its kwargs on; these three are its names
        return {"num_classes": offered["num_classes"], "in_chans": offered["in_chans"],
                "img_size": offered["input_size"]}
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return dict(offered)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(offered)
    return {k: v for k, v in offered.items() if k in params}


def make(ref: str, kwargs: str, view: str, num_classes: int, input_size: int, num_scales: int,
         seed: int | torch.Generator = 0, bf16: bool = False) -> FactoryNet:
    """The factory's network, its initial weights drawn from `seed` (torch's global generator is
    seeded for the call and restored after), wrapped to take the study's crops."""
    fn = load(ref)
    in_chans = num_scales if view == "scales" else 1
    offered = {"num_classes": num_classes, "in_chans": in_chans, "input_size": input_size, "view": view}
    extra = json.loads(kwargs) if kwargs else {}
    if isinstance(seed, torch.Generator):
        seed = int(torch.randint(2**62, (1,), generator=seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            net = fn(**call_args(fn, ref, offered), **extra)
        except Exception as e:
            raise FactoryError(f"factory {ref!r} raised {type(e).__name__}: {e}") from e
    if not isinstance(net, nn.Module):
        raise FactoryError(f"factory {ref!r} returned a {type(net).__name__}, not a torch.nn.Module")
    return FactoryNet(net, view, bf16)


def check(model: nn.Module, ref: str, shape: tuple[int, ...], num_classes: int) -> None:
    """A sample batch of 2 through `model` gives (2, num_classes) logits, else a FactoryError naming both shapes."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.zeros(2, *shape))
    except Exception as e:
        raise FactoryError(f"factory {ref!r}: its network fails on a sample batch of shape {(2, *shape)} "
                           f"({type(e).__name__}: {e})") from e
    finally:
        model.train(was_training)
    got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
    if got != (2, num_classes):
        raise FactoryError(f"factory {ref!r}: logits of shape {got} for a sample batch of shape {(2, *shape)}; "
                           f"expected {(2, num_classes)} (batch, num_classes)")


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def cost(model: nn.Module, shape: tuple[int, ...]) -> dict[str, int]:
    """Parameters and forward FLOPs of one sample of `shape` (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)
    x = torch.zeros(1, *shape, device=param.device if param is not None else "cpu")
    counter = FlopCounterMode(display=False)
    with counter:  # with autograd on: fused inference kernels (nn.TransformerEncoder's fast path) go uncounted
        model(x)
    model.train(was_training)
    return {"params": count_parameters(model), "flops": int(counter.get_total_flops())}
