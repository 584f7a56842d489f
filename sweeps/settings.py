"""What the paper's sweeps share, defined once: the paper's geometry, grid, training length, figures
and resources at full size (PAPER), and their laptop-size `--quick` counterparts (QUICK).

Full size is the original demo (docs/original.md): a 1920 px field, 120 px digits, 11 crops of 60 px,
20 epochs at batch 128, the grid 0..780 x 0..840 and the figures at spacings 120 and 240. Quick is
the same at 0.4 scale (field 768, digits 48, crops 24: every layer keeps its 5x5 convolution) with
a 48 px grid and 400 test images per condition; sweeps/demo.py says why and what it shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from cluster.resources import Resources
from ecc.geometry import StimulusConfig
from results.figspec import Comparison

from .spec import EvalGrid, FigureSpec, StageResources, SweepSpec


@dataclass(frozen=True, eq=False)
class Scale:
    """One size of the paper's experiments."""

    stimulus: StimulusConfig
    training: Mapping[str, Any]  # TrainConfig fields (a sweep adds num_epochs where it differs)
    grid: EvalGrid
    resources: StageResources
    spacing: float               # the closest spacing without overlap: where the claims are measured
    spacings: tuple[float, float]
    far_target: float            # the "target far out" figure
    suffix: str                  # of the sweep's name (its experiment folder): "" full size, "-quick" for --quick
    conditions_per_job: int
    dcnn_crop: int               # the DCNNs' input side: one crop of their whole field

    def spec(self, name: str, **fields: Any) -> SweepSpec:
        """A sweep at this size, `name` + suffix: this size's grid, resources and conditions per job
        unless `fields` (the rest: models, learning_rates, figures, claims, ...) say otherwise."""
        base = {"grid": self.grid, "resources": self.resources, "conditions_per_job": self.conditions_per_job}
        return SweepSpec(name=name + self.suffix, **{**base, **fields})

    def figures(self, comparisons: tuple[Comparison, ...] = ()) -> FigureSpec:
        return FigureSpec(spacings=self.spacings, center_target=0, far_target=self.far_target,
                          comparisons=comparisons)

    def bouma_grid(self) -> EvalGrid:
        """This size's grid refined for Bouma's law (results/bouma.py): the flanker positions at half
        the step, and targets at half the step up to half the far target, where a network still reads
        the isolated target; every point of the grid stays, so its claims and figures are unchanged."""
        targets, flankers = sorted(self.grid.target_eccs), sorted(self.grid.flanker_eccs)
        t_step, f_step = targets[1] - targets[0], flankers[1] - flankers[0]
        near = [t_step / 2 * i for i in range(int(self.far_target / t_step) + 1)]
        fine = [f_step / 2 * i for i in range(int(2 * max(flankers) / f_step) + 1)]
        return replace(self.grid, target_eccs=_pixels([*targets, *near]), flanker_eccs=_pixels([*flankers, *fine]))

    def grid_every(self, target_step: int, test_images: int) -> EvalGrid:
        """The grid with targets every `target_step` px (same range) and `test_images` per condition."""
        top = max(self.grid.target_eccs) + 1
        return replace(self.grid, target_eccs=tuple(range(0, int(top), target_step)), test_images=test_images)


def _pixels(values: list[float]) -> tuple[float, ...]:
    """Positions sorted, each once, whole ones as ints (as the grids are written)."""
    return tuple(int(x) if float(x).is_integer() else x for x in sorted(set(values)))


PAPER = Scale(
    stimulus=StimulusConfig(),
    training={"num_epochs": 20, "batch_size": 128},
    grid=EvalGrid(target_eccs=tuple(range(0, 840, 60)), flanker_eccs=tuple(range(0, 900, 120))),
    resources=StageResources(
        datasets=Resources(cpus=4, mem_gb=8, time_min=60),
        train=Resources(cpus=8, gpus=1, mem_gb=16, time_min=360),
        eval=Resources(cpus=4, gpus=1, mem_gb=8, time_min=60)),
    spacing=120, spacings=(120, 240), far_target=720, suffix="", conditions_per_job=8, dcnn_crop=60)

QUICK = Scale(
    stimulus=StimulusConfig(field_size=768, digit_height=48, flanker_height=48, crop_size=24, num_scales=11),
    training={"batch_size": 32, "train_images": 12000, "validation_size": 1000},
    grid=EvalGrid(target_eccs=tuple(range(0, 360, 48)), flanker_eccs=tuple(range(0, 408, 48)), test_images=400),
    resources=StageResources(
        datasets=Resources(cpus=1, mem_gb=2, time_min=15),
        train=Resources(cpus=1, mem_gb=2, time_min=30),
        eval=Resources(cpus=1, mem_gb=2, time_min=15)),
    spacing=48, spacings=(48, 96), far_target=288, suffix="-quick", conditions_per_job=16, dcnn_crop=32)
