"""Does your network crowd, and like people? The eccentricity model, the paper's DCNN and two networks
of your own (factories: ecc/networks/) on the demo's grid refined for Bouma's law
(settings.Scale.bouma_grid: flanker positions at half the step, targets at half the step near the
centre; every demo point kept), each tested for the demo's claims and fitted for Bouma's law
(results/bouma.py: critical spacing against eccentricity, per network).

Models, all trained on isolated even MNIST digits at random positions, contrast None:
* `ecc_11-1-1-1-1`: the demo's eccentricity model (11 crops);
* `dcnn_progressive`: the paper's DCNN (pooling at every layer, the paper's 60-27-11-1 maps), a
  one-scale EccNet seeing a 3-digit field resized to its input (sweeps/dcnn.py);
* `resnet_small` (ecc/networks/resnet_small.py, view `field`): a small residual network
  seeing the DCNN's field (the same datasets);
* `vit_small` (ecc/networks/vit_small.py, view `field`): a small vision transformer seeing
  the DCNN's field, 4x4 patches.
Both see the field, not the 11 crops as channels (view `scales`): on the quick sweep's 11 crops at
lr 0.1 both stayed at chance (measured: val/acc 0.19 and 0.21 after 2 epochs), while on the field
they learn (0.95 and 0.89 after 1 and 4 epochs). The `scales` view is there for networks built
for it (README "Your own network").
The claims (sweeps/demo.py: crowding, robust at the centre, inner flanker worse, closer and more
flankers crowd more) are declared per network where its planned conditions measure them; the
results table gives each network's parameters and forward FLOPs.

The factories are referenced by their files (ecc/factory.py stores the path absolute, so jobs find
them from any folder; config.json records each file's sha256). `--quick`: the quick demo's
geometry and budget (96,000 samples for the eccentricity model, 48,000 for the field networks at
a 32 px input, as the dcnn sweep's quick DCNNs), one learning rate (0.1, the quick demo's choice).

Measured (`--quick --executor local` from an empty folder, 2 cores): 3 min 34 s wall, 373 s CPU,
262 conditions. Isolated target at the centre -> xax at spacing 48: ecc 0.8925 -> 0.870, DCNN
0.9725 -> 0.865, ResNet 0.9725 -> 0.855, ViT 0.900 -> 0.4375; crowding supported for all four
(+39.7, +10.8, +11.8, +46.2 pp; one seed). Bouma: the eccentricity model's critical spacing grows
as 2.09 (1.91 to 2.35) x eccentricity (people: 0.3-0.6); the field networks' 3-digit field holds
too few spacings for a fit (findings.md says so per network).
"""

from __future__ import annotations

from ecc.config import TrainConfig
from ecc.geometry import StimulusConfig
from ecc.model_config import ModelConfig, dcnn

from . import demo
from .claims import measurable
from .dcnn import DCNN_FIELD_DIGITS, dcnn_stimulus
from .settings import PAPER, QUICK, Scale
from .spec import SweepSpec

# By module, not by file: a file factory's absolute path is part of its runs' identity, and these
# ship with the package (a checkout elsewhere keeps the same runs).
RESNET = "ecc.networks.resnet_small:make"
VIT = "ecc.networks.vit_small:make"
LEARNING_RATES = (0.1, 0.01, 0.001)


def networks() -> dict[str, ModelConfig]:
    """The architectures, by name: two of the study's, two factories."""
    return {
        "ecc_11-1-1-1-1": ModelConfig(pm="11-1-1-1-1", total_pool=True),
        "dcnn_progressive": dcnn("progressive"),
        "resnet_small": ModelConfig(factory=RESNET, view="field", factory_kwargs={"width": 16, "blocks": 2}),
        "vit_small": ModelConfig(factory=VIT, view="field", factory_kwargs={"patch": 4, "dim": 64, "depth": 2}),
    }


def models(scale: Scale, field_crop: int, field_epochs: int, **train) -> tuple[tuple[str, TrainConfig], ...]:
    """Each network on its stimulus: the 11 crops of the demo, or the DCNN's one-crop field."""
    crops: StimulusConfig = scale.stimulus
    field = dcnn_stimulus(crops.digit_height, field_crop, DCNN_FIELD_DIGITS)
    out = []
    for name, model in networks().items():
        one_crop = model.view == "field" if model.factory else model.num_scales == 1
        config = TrainConfig(stimulus=field if one_crop else crops, model=model, random_shifts=True,
                             contrast_norm="None", **{**train, **({"num_epochs": field_epochs} if one_crop else {})})
        out.append((name, config))
    return tuple(out)


def sweep(quick: bool = False) -> SweepSpec:
    scale = QUICK if quick else PAPER
    figures = scale.figures(demo.comparisons(scale.spacing, scale.far_target))
    if quick:
        nets = models(QUICK, 32, 4, num_epochs=8, **QUICK.training)
    else:
        nets = models(PAPER, 60, PAPER.training["num_epochs"], **PAPER.training)
    return SweepSpec(
        name="architectures-quick" if quick else "architectures",
        models=nets,
        learning_rates=(0.1,) if quick else LEARNING_RATES,
        grid=scale.bouma_grid(),
        figures=figures,
        claims=measurable(demo.claims(figures), nets, scale.bouma_grid()),
        resources=scale.resources,
        conditions_per_job=16 if quick else 8,
        description="the eccentricity model, the paper's DCNN and two networks of your own (a small ResNet, a "
                    "small ViT: ecc/networks/) on the demo's grid refined for Bouma's law, with the demo's "
                    "claims and a Bouma fit per network"
                    + (" (quick: the quick demo's geometry, lr 0.1)" if quick else ""))
