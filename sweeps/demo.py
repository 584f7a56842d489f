"""The paper's demo experiment: the 11-1-1-1-1 eccentricity model with total pooling, trained on
even MNIST digits at random positions, contrast {areafactor, None} x learning rate {0.1, 0.01,
0.001}; the best learning rate per contrast is evaluated on the original's grid (flanker types
0, 1, 2 x target eccentricities 0..780 step 60 x flanker eccentricities 0..840 step 120).

`quick=True` runs the same pipeline with reduced sizes, so that it finishes in minutes on a laptop
with figures that mean something: a 0.4-scale geometry (field 768, digits 48, crops 24: every
layer keeps its 5x5 convolution), 12,000 training images x 8 epochs at batch 32, a grid with
48 px steps and 400 test images per condition, and only the contrast-None model. areafactor
divides the central crops by up to 1024, and at a laptop's budget it stays at chance for every
learning rate (measured: 64,000 samples at lr 0.1, 0.01 and 0.001), so a quick areafactor model
would only add meaningless figures; it needs the full demo (~540,000 samples). The paper's
numbers need the full demo too (GPUs).

Both declare the paper's claims the demo can test (`claims`; results.findings, findings.md), each
measured only where its effect can be seen (results.visibility): crowding (a minus xax at the
closest spacing S, over target eccentricities), robustness at the centre (that drop far out minus
at the centre), the inner/outer asymmetry (ax minus xa at S), and both halves of the paper's
second claim: closer flankers crowd more (xax at 2S minus xax at S) and more flankers crowd more
(ax minus xax, and xa minus xax, at S).
"""

from __future__ import annotations

from ecc.config import TrainConfig
from ecc.geometry import StimulusConfig
from ecc.model_config import ModelConfig
from results.figspec import Comparison
from results.findings import Claim, Term

from .claims import crowding, second_claim
from .settings import PAPER, QUICK
from .spec import FigureSpec, SweepSpec

CONTRASTS = ("areafactor", "None")
LEARNING_RATES = (0.1, 0.01, 0.001)


def _models(stimulus: StimulusConfig, contrasts: tuple[str, ...] = CONTRASTS,
            **train) -> tuple[tuple[str, TrainConfig], ...]:
    model = ModelConfig(pm="11-1-1-1-1", total_pool=True, parity="even")
    return tuple((f"{model.pm}_total_pool_contrast_{c}",
                  TrainConfig(stimulus=stimulus, model=model, random_shifts=True, contrast_norm=c, **train))
                 for c in contrasts)


def claims(figures: FigureSpec) -> tuple[Claim, ...]:
    """The demo's claims (docs/original.md "Paper findings"), where its figures cut the grid: the closest
    spacing, the centre and the far target."""
    spacing, center, far = min(figures.spacings), figures.center_target, figures.far_target
    return (
        crowding(spacing),
        Claim("robust at the centre",
              "The eccentricity-dependent model is more robust to flankers when the target is at the centre "
              "than away from it.",
              (Term("a", target_ecc=far), Term("xax", spacing, weight=-1, target_ecc=far),
               Term("a", weight=-1, target_ecc=center), Term("xax", spacing, target_ecc=center)),
              measure=f"the drop a - xax (spacing {spacing:g}) at target {far:g} minus the drop at target {center:g}"),
        Claim("inner flanker worse",
              "A flanker between the target and the centre (xa) crowds more than one farther out (ax).",
              (Term("ax", spacing), Term("xa", spacing, weight=-1)),
              measure=f"accuracy with the outer flanker (ax) minus with the inner one (xa) at spacing {spacing:g}, "
                      "mean over target eccentricities"),
        *second_claim(spacing))


def comparisons(spacing: float, off_target: float) -> tuple[Comparison, ...]:
    """The demo's models on one axis: xax vs target eccentricity, and centre vs off centre."""
    return (Comparison(kind="spacing", label="xax", spacing=spacing),
            Comparison(kind="center", label="xax", spacing=spacing, off_target=off_target))


def sweep(quick: bool = False) -> SweepSpec:
    scale = QUICK if quick else PAPER
    figures = scale.figures(comparisons(scale.spacing, scale.far_target))
    if quick:
        models = _models(scale.stimulus, ("None",), num_epochs=8, **scale.training)
        description = ("the demo's pipeline in minutes on a laptop: model 11-1-1-1-1, contrast None, field 768 "
                       "(0.4 scale), 3 learning rates x 96,000 training samples, a 48 px grid")
    else:
        models = _models(scale.stimulus, **scale.training)
        description = " ".join(__doc__.split("\n\n")[0].split())
    return scale.spec("demo", models=models, learning_rates=LEARNING_RATES, figures=figures,
                      claims=claims(figures), description=description)
