"""Flanker similarity: do flankers that resemble the target crowd more? (the paper's Section 4.3)

Claim tested: "visual similarity between the target and flankers also plays a role": odd-digit
flankers (MNIST) should crowd even-digit targets more than letters. Measured by: one model's
accuracy on xax and xa at the smallest spacing (120 px; quick: 48 px) against target
eccentricity, one curve per flanker set (`spacing` comparison figures by flanker set), read from
results.csv rows with the same condition and different flanker_dset.

One model (the demo's 11-1-1-1-1, contrast None) trained on isolated even digits at random
positions, evaluated on the same grid with
* MNIST flankers (odd digits) and `letters` flankers (A-J rendered from matplotlib's fonts,
  ecc/sources/letters.py: nothing to download; their ink is as tall as the digits', as the original's
  flanker_height 85 for notMNIST did);
* notMNIST and Omniglot flankers too when their folders (`$CROWDING_DATA/notMNIST`,
  `.../omniglot`) hold files, and a second model trained and tested on MIT Places backgrounds
  when `$CROWDING_DATA/places` does (OPTIONAL_FLANKERS, places_model). A sweep that names a set
  whose folder is missing is refused before anything is submitted (exit 2, saying what to get and
  where to put it: SweepSpec.check_data).

`--quick`: the quick demo's geometry, one learning rate (0.1), 96,000 training samples, 400
test images per condition. Numbers measured here are in docs/experiments.md.

The quick budget does not show the claim's direction. Measured here (2 idle CPU cores: 3 min 1 s
wall, 218 s CPU): isolated target at the centre 0.8925; with the target at the centre, xax at
spacing 48 MNIST 0.870 vs letters 0.860, ax at 48 0.890 vs 0.885; pooled over the grid ax 0.671
vs 0.665, xax 0.512 vs 0.509 (findings: -1.0 pp, -3.1 to +1.1, inconclusive). Away from the
centre the quick model is near chance with either set, so the comparison rests on the few
central conditions.
"""

from __future__ import annotations

from dataclasses import replace

from ecc import sources
from ecc.config import TrainConfig
from ecc.model import ModelConfig
from ecc.sources import SourceConfig
from ecc.stimuli import StimulusConfig
from results.figspec import Comparison

from .settings import PAPER, QUICK
from .spec import Claim, SweepSpec, Term

BUILTIN_FLANKERS = ("MNIST", "letters")
OPTIONAL_FLANKERS = ("notMNIST", "omniglot")
LEARNING_RATES = (0.1, 0.01, 0.001)


def flanker_sets(source: SourceConfig) -> tuple[str, ...]:
    """MNIST and letters, plus the optional sets whose folders hold files."""
    return BUILTIN_FLANKERS + tuple(d for d in OPTIONAL_FLANKERS if sources.flankers_present(d, source))


def models(stimulus: StimulusConfig, source: SourceConfig, **train) -> tuple[tuple[str, TrainConfig], ...]:
    model = ModelConfig(pm="11-1-1-1-1", total_pool=True)
    base = TrainConfig(stimulus=stimulus, model=model, random_shifts=True, contrast_norm="None", **train)
    out = [(f"{model.pm}_isolated", base)]
    if sources.places_present(source):  # the paper's backgrounds: a model trained and tested on them
        out.append((f"{model.pm}_isolated_places", replace(base, place="random")))
    return tuple(out)


def comparisons(spacing: float) -> tuple[Comparison, ...]:
    return (Comparison(kind="spacing", label="xax", spacing=spacing, by="flanker_dset"),
            Comparison(kind="spacing", label="xa", spacing=spacing, by="flanker_dset"),
            Comparison(kind="spacing", label="ax", spacing=spacing, by="flanker_dset"))



def claims(spacing: float, dsets: tuple[str, ...]) -> tuple[Claim, ...]:
    """Flankers similar to the target crowd more (results.findings): xax accuracy with each
    dissimilar flanker set minus with odd MNIST digits, at the closest spacing, averaged over
    target eccentricities. Positive when the claim holds."""
    return tuple(
        Claim(f"MNIST flankers crowd more than {dset}",
              f"Flankers that resemble the target (odd digits) crowd more than dissimilar ones ({dset}).",
              (Term("xax", spacing, flanker_dset=dset), Term("xax", spacing, weight=-1, flanker_dset="MNIST")),
              measure=f"xax accuracy at spacing {spacing:g} with {dset} flankers minus with MNIST flankers, mean "
                      "over target eccentricities")
        for dset in dsets if dset != "MNIST")


def sweep(quick: bool = False) -> SweepSpec:
    source = SourceConfig()
    dsets = flanker_sets(source)
    if not quick:
        return SweepSpec(
            name="similarity",
            models=models(PAPER.stimulus, source, **PAPER.training),
            learning_rates=LEARNING_RATES,
            grid=replace(PAPER.grid, flanker_dsets=dsets),
            figures=PAPER.figures(comparisons(PAPER.spacing)),
            claims=claims(PAPER.spacing, dsets),
            resources=PAPER.resources,
            source=source,
            conditions_per_job=8,
            description=f"one model trained on isolated digits, tested with flankers {', '.join(dsets)}")
    return SweepSpec(
        name="similarity-quick",
        models=models(QUICK.stimulus, source, num_epochs=8, **QUICK.training),
        learning_rates=(0.1,),
        grid=replace(QUICK.grid, flanker_dsets=dsets),
        figures=QUICK.figures(comparisons(QUICK.spacing)),
        claims=claims(QUICK.spacing, dsets),
        resources=QUICK.resources,
        source=source,
        conditions_per_job=16,
        description=f"the quick demo's model (lr 0.1, 96,000 samples) tested with flankers {', '.join(dsets)}")
