"""Pooling across scales: where the eccentricity model pools its scales (the paper's Section 4.2).

Claim tested: "pooling in early layers of the network leads to more crowding." Measured by: the
accuracy of xax (two flankers) and xa at the smallest spacing (120 px; quick: 48 px) against
target eccentricity, per model (`spacing` comparison figures), and per model at the centre and
off centre (`center` figure): early pooling (11-1-1-1-1) should lose more to flankers than
pooling at the end (11-11-11-11-1), with progressive pooling (11-7-5-3-1) between. findings.md
(`all_claims`) also tests both halves of the paper's second claim (closer and more flankers crowd
more) on every model; each claim only where its effect can be seen (results.visibility), so the
quick models' positions at chance are left out rather than averaged in.

Models (everything else as the demo: total pooling, isolated even digits at random positions):
pm 11-1-1-1-1 (scales pooled at the first layer), 11-7-5-3-1 (progressively), 11-11-11-11-1 (at
the end), each with both of the demo's contrast normalisations (CONTRASTS; the original README
points to the paper for contrast normalisation, and the demo trains both): `pm_<pm>` with contrast
None, `pm_<pm>_areafactor` with areafactor. The claims compare the three placements within one
contrast normalisation.

`--quick`: the demo-quick geometry (field 768, digits 48, crops 24) with 5 scales instead of 11
(crops 24, 57, 135, 322, 768 px), so that pooling at the end stays affordable: pm 5-1-1-1-1
(early), 5-4-3-2-1 (progressive), 5-5-5-5-1 (at the end), at 17, 54 and 71 MFLOP per image (at 11
scales, 11-11-11-11-1 costs 156, 7.6x 11-1-1-1-1: beyond a laptop's 10 minutes). Contrast None
only, for the demo's reason (sweeps/demo.py): areafactor divides the central crop by (field /
crop)^2 = 1024, with 5 scales as with 11, and at this budget areafactor models stay at chance.
Measured here with the quick pooling models' settings (`python -m ecc.train --pm PM --num_scales 5
--field_size 768 --digit_height 48 --flanker_height 48 --crop_size 24 --random_shifts true
--contrast_norm areafactor --train_images 12000 --validation_size 1000 --batch_size 32
--num_epochs 4 --learning_rate LR`, 48,000 samples): validation accuracy between 0.195 and 0.228
at every epoch for 5-1-1-1-1 at lr 0.1, 0.01 and 0.001, and for 5-4-3-2-1 and 5-5-5-5-1 at lr 0.1
(chance 0.2), where the contrast-None models reach 0.30-0.35. Quick areafactor models would only
add figures at chance. One learning rate (0.1), 48,000 training samples per model, a 96 px target
grid, 300 test images per condition. Numbers measured here are in docs/experiments.md.

The quick budget cannot show the claim. Measured here (2 idle CPU cores: 3 min 49 s wall, 380 s
CPU): validation accuracy 0.30 / 0.35 / 0.31 (early / progressive / end); isolated target at the
centre 0.707 / 0.780 / 0.857, xax at spacing 48 there 0.700 / 0.760 / 0.827 (no model loses more
than 3 points); every model is near chance (0.18-0.33) at target 96 and beyond, with or without
flankers, so there is little crowding to compare (findings: early 0.2 pp, inconclusive;
progressive 3.5 pp, supported, on the central conditions). It needs the full sweep.
"""

from __future__ import annotations

from dataclasses import replace

from ecc.config import TrainConfig
from ecc.geometry import StimulusConfig
from ecc.model_config import ModelConfig
from results.figspec import Comparison

from .claims import crowds_more, measurable, second_claim
from .settings import PAPER, QUICK
from .spec import Claim, EvalGrid, SweepSpec

PMS = ("11-1-1-1-1", "11-7-5-3-1", "11-11-11-11-1")
LEARNING_RATES = (0.1, 0.01, 0.001)
CONTRASTS = ("None", "areafactor")  # the demo's two contrast normalisations (--quick: None only)


QUICK_PMS = ("5-1-1-1-1", "5-4-3-2-1", "5-5-5-5-1")  # the same three placements with 5 scales


def model_name(pm: str, contrast: str = "None") -> str:
    """pm_<pm> with contrast None (the names the quick sweep has always had), pm_<pm>_<contrast> otherwise."""
    return f"pm_{pm}" if contrast == "None" else f"pm_{pm}_{contrast}"


def models(stimulus: StimulusConfig, pms: tuple[str, ...] = PMS, contrasts: tuple[str, ...] = CONTRASTS,
           **train) -> tuple[tuple[str, TrainConfig], ...]:
    return tuple((model_name(pm, c), TrainConfig(stimulus=stimulus, model=ModelConfig(pm=pm, total_pool=True),
                                                 random_shifts=True, contrast_norm=c, **train))
                 for c in contrasts for pm in pms)


def comparisons(spacing: float, off_target: float) -> tuple[Comparison, ...]:
    return (Comparison(kind="spacing", label="xax", spacing=spacing),
            Comparison(kind="spacing", label="xa", spacing=spacing),
            Comparison(kind="spacing", label="a", spacing=spacing, title="isolated targets (a), per model"),
            Comparison(kind="center", label="xax", spacing=spacing, off_target=off_target))



def claims(spacing: float, pms: tuple[str, ...], contrast: str = "None") -> tuple[Claim, ...]:
    """Pooling early crowds more (results.findings): the crowding of the early (or progressive)
    model, a - xax at the closest spacing averaged over target eccentricities (where it can be
    seen: results.visibility), minus that of the model that pools at the end, all with one contrast
    normalisation. Positive when the claim holds."""
    early, progressive, late = (model_name(pm, contrast) for pm in pms)
    tag = "" if contrast == "None" else f" ({contrast})"
    return tuple(crowds_more(f"{how} pooling crowds more{tag}",
                             f"Pooling across scales {how if how == 'early' else 'progressively'} ({model}) "
                             f"crowds more than pooling at the end ({late}).", model, late, spacing)
                 for how, model in (("early", early), ("progressive", progressive)))


def all_claims(spacing: float, pms: tuple[str, ...], contrasts: tuple[str, ...],
               trained: tuple[tuple[str, TrainConfig], ...], grid: EvalGrid) -> tuple[Claim, ...]:
    """`claims` per contrast normalisation, then both halves of the paper's second claim (closer and
    more flankers crowd more) on every model."""
    return (*(c for contrast in contrasts for c in claims(spacing, pms, contrast)),
            *measurable(second_claim(spacing), trained, grid))


def sweep(quick: bool = False) -> SweepSpec:
    scale = QUICK if quick else PAPER
    figures = scale.figures(comparisons(scale.spacing, scale.far_target))
    if quick:
        trained = models(replace(scale.stimulus, num_scales=5), QUICK_PMS, ("None",), num_epochs=4, **scale.training)
        grid = scale.grid_every(96, test_images=300)
        return scale.spec(
            "pooling", models=trained, learning_rates=(0.1,), grid=grid, figures=figures,
            claims=all_claims(scale.spacing, QUICK_PMS, ("None",), trained, grid),
            resources=replace(scale.resources, train=replace(scale.resources.train, mem_gb=3)),
            description="pm 5-1-1-1-1 / 5-4-3-2-1 / 5-5-5-5-1 (5 scales) at the quick demo's geometry, contrast "
                        "None, lr 0.1, 48,000 training samples each, a 96 px target grid")
    # Pooling at the end keeps 11 scales through 3 layers: 7.6x the compute of 11-1-1-1-1.
    trained = models(scale.stimulus, **scale.training)
    return scale.spec(
        "pooling", models=trained, learning_rates=LEARNING_RATES, figures=figures,
        claims=all_claims(scale.spacing, PMS, CONTRASTS, trained, scale.grid),
        resources=replace(scale.resources, train=replace(scale.resources.train, mem_gb=32, time_min=720)),
        description="pooling across scales early (11-1-1-1-1), progressively (11-7-5-3-1) or at the end "
                    "(11-11-11-11-1), each with contrast None and areafactor; else as the demo")
