"""Training with flankers: does it give robustness to configurations not seen in training? (Section 4.4)

Claim tested: "incorporating flankers into the images of the training set for learning the DNNs
does not lead to robustness against configurations not seen at training." Measured by: the
train configuration x test configuration matrices of accuracy (figures/compare/matrix_*),
pooled over target eccentricities, at the trained spacing S and at an unseen spacing 2S: a
model trained on one configuration should do well on it at S and lose accuracy on the other
configurations and at 2S (the diagonal at S high, the rest lower).

Models: the demo's 11-1-1-1-1 (contrast None) trained at random positions on
* `train_a`: isolated targets;
* `train_ax` / `train_xa`: one flanker at spacing +S / -S (flanker_ecc - target_ecc). The sweep's
  grid tests target eccentricities >= 0, where a flanker at +S is farther out (ax) and one at -S
  nearer the centre (xa); during training the target also visits negative eccentricities, where
  the names swap, so each model has seen its own side of the target, not the other side;
* `train_xax`: two flankers at spacing S.
Where the paper is silent: S = 120 px (the nearest spacing without overlap; quick: 48), the
unseen spacing 2S, and the flankers' side being fixed per model (a parameter of the sweep,
`SIDES`).

`--quick`: the quick demo's geometry, one learning rate (0.1), 48,000 training samples per
model (half the quick demo's: four models), a 96 px target grid, 300 test images per condition.
Numbers measured here are in docs/experiments.md.

The quick budget cannot show the claim. Measured here (2 shared CPU cores, load 8: 27 min 45 s
wall, 665 s CPU): isolated target at the centre train_a 0.753, train_ax 0.607, train_xa 0.617,
train_xax 0.183 (chance: 48,000 samples with two flankers are not enough to learn); the
matrices (accuracy pooled over target eccentricities 0-288, where off-centre points are at
chance for every model) are flat: at the trained spacing 48 train_a a/xa/ax/xax 0.43 / 0.20 /
0.38 / 0.33, train_ax 0.33 / 0.21 / 0.32 / 0.30, train_xa 0.33 / 0.21 / 0.33 / 0.32; at the
unseen 96 train_ax 0.33 / 0.18 / 0.38 / 0.32. It needs the full sweep.
"""

from __future__ import annotations

from ecc.config import TrainConfig
from ecc.model import ModelConfig
from ecc.stimuli import StimulusConfig
from results.figspec import Comparison

from .settings import PAPER, QUICK
from .spec import Claim, SweepSpec, Term

LEARNING_RATES = (0.1, 0.01, 0.001)
SIDES = {"a": (0, 0.0), "ax": (1, 1.0), "xa": (1, -1.0), "xax": (2, 1.0)}  # name -> (flanker_type, sign of S)


def models(stimulus: StimulusConfig, spacing: float, **train) -> tuple[tuple[str, TrainConfig], ...]:
    model = ModelConfig(pm="11-1-1-1-1", total_pool=True)
    return tuple((f"train_{name}", TrainConfig(stimulus=stimulus, model=model, random_shifts=True, contrast_norm="None",
                                               flanker_type=ftype, flanker_ecc=sign * spacing, **train))
                 for name, (ftype, sign) in SIDES.items())


def comparisons(spacing: float) -> tuple[Comparison, ...]:
    return (Comparison(kind="matrix", spacing=spacing, title=f"trained spacing {spacing:g}"),
            Comparison(kind="matrix", spacing=2 * spacing, title=f"unseen spacing {2 * spacing:g}"),
            Comparison(kind="spacing", label="xax", spacing=spacing),
            Comparison(kind="spacing", label="xax", spacing=2 * spacing))



def claims(spacing: float) -> tuple[Claim, ...]:
    """Training with flankers helps only where it was trained (results.findings). Each claim is a
    difference of gains over the model trained on isolated targets (train_a): the gain on the
    trained configuration minus the gain on an unseen one (the unseen spacing 2S for train_xax;
    the other side of the target for train_ax and train_xa), averaged over target
    eccentricities. Positive when training with flankers does not carry over."""
    base, unseen = "train_a", 2 * spacing

    def gain_gap(model: str, seen: Term, other: Term, what: str) -> Claim:
        flip = lambda t, w: Term(t.label, t.spacing, weight=w, model=base)  # noqa: E731
        return Claim(f"{model}: no robustness to {what}",
                     f"Training with flankers ({model}) does not give robustness to {what} not seen in training.",
                     (seen, flip(seen, -1.0), Term(other.label, other.spacing, weight=-1.0), flip(other, 1.0)),
                     measure=f"gain of {model} over {base} on {seen.describe()} minus its gain on "
                             f"{other.describe()}, mean over target eccentricities", models=(model,))

    return (gain_gap("train_xax", Term("xax", spacing), Term("xax", unseen), f"a spacing ({unseen:g})"),
            gain_gap("train_ax", Term("ax", spacing), Term("xa", spacing), "a flanker on the other side (xa)"),
            gain_gap("train_xa", Term("xa", spacing), Term("ax", spacing), "a flanker on the other side (ax)"))


def sweep(quick: bool = False) -> SweepSpec:
    if not quick:
        return SweepSpec(
            name="flanker-training",
            models=models(PAPER.stimulus, float(PAPER.spacing), **PAPER.training),
            learning_rates=LEARNING_RATES,
            grid=PAPER.grid,
            figures=PAPER.figures(comparisons(PAPER.spacing)),
            claims=claims(PAPER.spacing),
            resources=PAPER.resources,
            conditions_per_job=8,
            description="11-1-1-1-1 trained on isolated targets, one flanker (ax, xa) or two (xax) at spacing "
                        "120; tested on every configuration at 120 and at the unseen 240")
    return SweepSpec(
        name="flanker-training-quick",
        models=models(QUICK.stimulus, float(QUICK.spacing), num_epochs=4, **QUICK.training),
        learning_rates=(0.1,),
        grid=QUICK.grid_every(96, test_images=300),
        figures=QUICK.figures(comparisons(QUICK.spacing)),
        claims=claims(QUICK.spacing),
        resources=QUICK.resources,
        conditions_per_job=16,
        description="the quick demo's model trained on a, ax, xa, xax (spacing 48), lr 0.1, 48,000 samples each; "
                    "tested at 48 and the unseen 96")
