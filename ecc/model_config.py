"""The eccentricity model's configuration, torch-free: ModelConfig (the EccNet fields, or a factory
naming a network of your own: ecc/factory.py), its layer shapes and FLOPs, and the paper's DCNN
baselines as configurations (dcnn). The network itself is in ecc/model.py; this module loads no
torch, so the launcher's --status and results/ can read configs without it."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from core.cli import arg, check_choice, check_choices

from . import factory_ref as factories
from .conditions import num_classes
from .sources.config import PARITIES

PM_EXAMPLE = "11-1-1-1-1"


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
