"""What the paper's sweeps share, defined once: the paper's geometry, grid, training length, figures
and resources at full size, and their laptop-size (`--quick`) counterparts.

Full size is the original demo (ORIGINAL.md): a 1920 px field, 120 px digits, 11 crops of 60 px,
20 epochs at batch 128, the grid 0..780 x 0..840 and the figures at spacings 120 and 240. Quick is
the same at 0.4 scale (field 768, digits 48, crops 24: every layer keeps its 5x5 convolution) with
a 48 px grid; sweeps/demo.py says why and what it shows.
"""

from __future__ import annotations

from cluster.resources import Resources
from ecc.stimuli import StimulusConfig
from results.figspec import Comparison

from .spec import EvalGrid, FigureSpec, StageResources

PAPER_STIMULUS = StimulusConfig()
PAPER_TRAINING = {"num_epochs": 20, "batch_size": 128}
PAPER_GRID = EvalGrid(target_eccs=tuple(range(0, 840, 60)), flanker_eccs=tuple(range(0, 900, 120)))
PAPER_RESOURCES = StageResources(
    datasets=Resources(cpus=4, mem_gb=8, time_min=60),
    train=Resources(cpus=8, gpus=1, mem_gb=16, time_min=360),
    eval=Resources(cpus=4, gpus=1, mem_gb=8, time_min=60))
PAPER_SPACING = 120  # the closest spacing of the grid without overlap: where the claims are measured

QUICK_STIMULUS = StimulusConfig(field_size=768, digit_height=48, flanker_height=48, crop_size=24, num_scales=11)
QUICK_TRAINING = {"batch_size": 32, "train_images": 12000, "validation_size": 1000}  # + the sweep's num_epochs
QUICK_RESOURCES = StageResources(
    datasets=Resources(cpus=1, mem_gb=2, time_min=15),
    train=Resources(cpus=1, mem_gb=2, time_min=30),
    eval=Resources(cpus=1, mem_gb=2, time_min=15))
QUICK_SPACING = 48


def paper_figures(comparisons: tuple[Comparison, ...] = ()) -> FigureSpec:
    return FigureSpec(spacings=(120, 240), center_target=0, far_target=720, comparisons=comparisons)


def quick_figures(comparisons: tuple[Comparison, ...] = ()) -> FigureSpec:
    return FigureSpec(spacings=(48, 96), center_target=0, far_target=288, comparisons=comparisons)


def quick_grid(target_step: int = 48, test_images: int = 400, **grid) -> EvalGrid:
    """The quick grid: targets 0..336 every `target_step` px, flankers 0..384 every 48 px."""
    return EvalGrid(target_eccs=tuple(range(0, 360, target_step)), flanker_eccs=tuple(range(0, 408, 48)),
                    test_images=test_images, **grid)
