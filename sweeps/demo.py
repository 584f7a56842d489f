"""The paper's demo experiment: the 11-1-1-1-1 eccentricity model with total pooling, trained on
even MNIST digits at random positions, contrast {areafactor, None} x learning rate {0.1, 0.01,
0.001}; the best learning rate per contrast is evaluated on the original's grid (flanker types
0, 1, 2 x target eccentricities 0..780 step 60 x flanker eccentricities 0..840 step 120).

`quick=True` runs the same pipeline at half the geometry (field 960, digits 60, crops 30), on
fewer training images and epochs, a coarser grid and fewer test images, so that it finishes in
minutes on a laptop. It shows the pipeline and the shape of the figures; the paper's numbers
need the full demo (GPUs).
"""

from __future__ import annotations

from cluster.resources import Resources
from ecc.model import ModelConfig
from ecc.stimuli import StimulusConfig
from ecc.train import TrainConfig

from .spec import EvalGrid, FigureSpec, StageResources, SweepSpec

CONTRASTS = ("areafactor", "None")
LEARNING_RATES = (0.1, 0.01, 0.001)


def _models(stimulus: StimulusConfig, **train) -> tuple[tuple[str, TrainConfig], ...]:
    model = ModelConfig(pm="11-1-1-1-1", total_pool=True, parity="even")
    return tuple((f"{model.pm}_total_pool_contrast_{c}",
                  TrainConfig(stimulus=stimulus, model=model, random_shifts=True, contrast_norm=c, **train))
                 for c in CONTRASTS)


def sweep(quick: bool = False) -> SweepSpec:
    if not quick:
        return SweepSpec(
            name="demo",
            models=_models(StimulusConfig(), num_epochs=20, batch_size=128),
            learning_rates=LEARNING_RATES,
            grid=EvalGrid(target_eccs=tuple(range(0, 840, 60)), flanker_eccs=tuple(range(0, 900, 120))),
            figures=FigureSpec(spacings=(120, 240), center_target=0, far_target=720),
            resources=StageResources(
                datasets=Resources(cpus=4, mem_gb=8, time_min=60),
                train=Resources(cpus=8, gpus=1, mem_gb=16, time_min=360),
                eval=Resources(cpus=4, gpus=1, mem_gb=8, time_min=60)),
            conditions_per_job=8,
            description=__doc__.split("\n\n")[0])
    half = StimulusConfig(field_size=960, digit_height=60, flanker_height=60, crop_size=30, num_scales=11)
    return SweepSpec(
        name="demo-quick",
        models=_models(half, num_epochs=4, batch_size=128, train_images=8000, validation_size=1000),
        learning_rates=LEARNING_RATES,
        grid=EvalGrid(target_eccs=tuple(range(0, 420, 60)), flanker_eccs=tuple(range(0, 480, 60)),
                      test_images=400),
        figures=FigureSpec(spacings=(60, 120), center_target=0, far_target=360),
        resources=StageResources(
            datasets=Resources(cpus=1, mem_gb=2, time_min=15),
            train=Resources(cpus=1, mem_gb=2, time_min=30),
            eval=Resources(cpus=1, mem_gb=2, time_min=15)),
        conditions_per_job=16,
        description="Quick demo (half geometry, small budget): " + __doc__.split("\n\n")[0])
