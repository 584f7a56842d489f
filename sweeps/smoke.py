"""A smoke test of the whole pipeline in seconds: a tiny field, 2 models x 2 learning rates on a few
hundred images, a 3 x 3 grid. Use it to check that a cluster setup works
(`python -m sweeps.launch smoke --executor slurm`); its accuracies mean nothing.
`quick` changes nothing (it is already tiny)."""

from __future__ import annotations

import dataclasses

from cluster.resources import Resources
from ecc.config import TrainConfig
from ecc.geometry import StimulusConfig
from ecc.model_config import ModelConfig

from .spec import EvalGrid, FigureSpec, StageResources, SweepSpec

TINY = StimulusConfig(field_size=240, digit_height=40, flanker_height=40, crop_size=16, num_scales=4)


def sweep(quick: bool = False) -> SweepSpec:
    model = ModelConfig(pm="4-1-1-1", feats_per_layer=8)
    base = TrainConfig(stimulus=TINY, model=model, random_shifts=True, num_epochs=2, batch_size=32,
                       train_images=256, validation_size=200)
    small = Resources(cpus=1, mem_gb=1, time_min=10)
    return SweepSpec(
        name="smoke",
        models=tuple((f"{model.pm}_contrast_{c}", dataclasses.replace(base, contrast_norm=c))
                     for c in ("None", "areafactor")),
        learning_rates=(0.1, 0.01),
        grid=EvalGrid(target_eccs=(0, 40, 80), flanker_eccs=(0, 40, 80), test_images=64),
        figures=FigureSpec(spacings=(40, 80), center_target=0, far_target=80),
        resources=StageResources(datasets=small, train=small, eval=small),
        conditions_per_job=4,
        description=__doc__.split("\n")[0])
