"""Flanker similarity: do flankers that resemble the target crowd more? (the paper's Section 4.3)

Claim tested: "visual similarity between the target and flankers also plays a role": odd-digit
flankers (MNIST) should crowd even-digit targets more than letters. Measured by: each model's
accuracy on xax and xa at the smallest spacing (120 px; quick: 48 px) against target
eccentricity, one curve per flanker set (`spacing` comparison figures by flanker set), read from
results.csv rows with the same condition and different flanker_dset.

Models, each trained on isolated even digits at random positions (contrast None) and evaluated
with every flanker set, each set at its own height (ecc.sources.FlankerSet):
* `11-1-1-1-1_isolated`: the demo's eccentricity model;
* `dcnn_no_total_pool`, `dcnn_progressive`, `dcnn_at_end`: the paper's DCNNs, as the dcnn sweep
  trains them (sweeps/dcnn.py: a 3-digit field at a 60x60 input; the paper compared the flanker
  sets on its DCNNs too).
Flanker sets:
* MNIST flankers (odd digits) and `letters` flankers (A-J rendered from matplotlib's fonts,
  ecc/sources/letters.py: nothing to download; drawn like the digits, 20 of 28 px of ink, so at the
  digits' flanker height their ink is as tall as the digits');
* notMNIST and Omniglot flankers when asked for (`extra_flankers`; their folders
  `$CROWDING_DATA/notMNIST`, `.../omniglot` are filled by hand), drawn as the original drew them:
  at 85 px next to 120 px targets (85/120 of the digits' flanker height at other sizes: 34 px in
  the quick geometry), because their ink fills the frame, and Omniglot characters cut to their ink
  first; and, with `places`, a second eccentricity model trained and tested on MIT Places
  backgrounds (`$CROWDING_DATA/places`). The plan never depends on which folders exist here: the
  options name the experiment (`similarity+notMNIST+omniglot+places`), and a set whose folder is
  missing is refused before anything is submitted (exit 2, saying what to get and where to put it:
  SweepSpec.check_data). Launch them from a sweep file (python -m sweeps.launch my_similarity.py):

      from sweeps import similarity

      def sweep(quick: bool = False):
          return similarity.sweep(quick, extra_flankers=("notMNIST", "omniglot"), places=True)

`--quick`: the quick demo's geometry, one learning rate (0.1), 96,000 training samples for the
eccentricity model, 400 test images per condition, and one DCNN, `dcnn_progressive`, as the quick
dcnn sweep trains it (144 px field at 32x32, 48,000 samples). Only that one because it stays small:
ModelConfig.flops_per_image gives 5.4 MFLOP per image at 32x32 for the progressive DCNN, 39 for
each of the other two, 20.6 for the eccentricity model at the quick geometry; so the progressive
DCNN adds about an eighth of the eccentricity model's training work, the other two about as much
as that model each. Measured: the quick sweep took 218 s CPU without the DCNN (3 min 1 s on 2 idle
cores) and 236 s with it (7 min 33 s wall on 2 cores shared with other work). Numbers measured here
are in docs/experiments.md.

The quick budget does not show the claim's direction. Measured here, 400 test images a point: the
eccentricity model's isolated target at the centre 0.8925; with the target at the centre, xax at
spacing 48 MNIST 0.870 vs letters 0.860, ax at 48 0.890 vs 0.885; pooled over the grid ax 0.671
vs 0.665, xax 0.512 vs 0.509 (findings: -1.0 pp, -3.1 to +1.1, inconclusive). Away from the
centre the quick model is near chance with either set, so the comparison rests on the few
central conditions. The progressive DCNN (its field keeps one xax condition, the target at the
centre): isolated 0.9725, xax at 48 MNIST 0.865 vs letters 0.890 (findings: +2.5 pp, -1.4 to
+6.5, inconclusive).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from core.cli import check_choice
from ecc.config import TrainConfig
from ecc.geometry import StimulusConfig
from ecc.model_config import ModelConfig
from ecc.sources import SourceConfig
from results.figspec import Comparison

from .dcnn import dcnn_models
from .settings import PAPER, QUICK
from .spec import Claim, SweepSpec, Term

BUILTIN_FLANKERS = ("MNIST", "letters")
OPTIONAL_FLANKERS = ("notMNIST", "omniglot")
LEARNING_RATES = (0.1, 0.01, 0.001)


def models(stimulus: StimulusConfig, places: bool = False, dcnns: tuple[tuple[str, TrainConfig], ...] = (),
           **train) -> tuple[tuple[str, TrainConfig], ...]:
    """The eccentricity model (and with `places` its twin on Places backgrounds), then `dcnns`."""
    model = ModelConfig(pm="11-1-1-1-1", total_pool=True)
    base = TrainConfig(stimulus=stimulus, model=model, random_shifts=True, contrast_norm="None", **train)
    out = [(f"{model.pm}_isolated", base)]
    if places:  # the paper's backgrounds: a model trained and tested on them
        out.append((f"{model.pm}_isolated_places", replace(base, place="random")))
    return (*out, *dcnns)


def comparisons(spacing: float, dsets: tuple[str, ...] = ("MNIST",)) -> tuple[Comparison, ...]:
    """Per flanker set, curves of the first model (the eccentricity model); per model (the DCNNs
    too), xax with the target at the centre, one figure per flanker set."""
    return (Comparison(kind="spacing", label="xax", spacing=spacing, by="flanker_dset"),
            Comparison(kind="spacing", label="xa", spacing=spacing, by="flanker_dset"),
            Comparison(kind="spacing", label="ax", spacing=spacing, by="flanker_dset"),
            *(Comparison(kind="center", label="xax", spacing=spacing, flanker_dset=d,
                         title=f"xax at spacing {spacing:g}, {d} flankers: target at the centre, per model")
              for d in dsets))



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


def sweep(quick: bool = False, extra_flankers: Sequence[str] = (), places: bool = False) -> SweepSpec:
    """MNIST and letters flankers; `extra_flankers` adds any of OPTIONAL_FLANKERS and `places` the
    Places model (both fetched by hand; they join the sweep's name)."""
    for d in extra_flankers:
        check_choice("extra_flankers", d, OPTIONAL_FLANKERS)
    dsets = BUILTIN_FLANKERS + tuple(d for d in OPTIONAL_FLANKERS if d in extra_flankers)
    name = "similarity" + "".join(f"+{d}" for d in (*dsets[len(BUILTIN_FLANKERS):], *(("places",) if places else ())))
    scale = QUICK if quick else PAPER
    if quick:
        dcnns = dcnn_models(scale.stimulus.digit_height, scale.dcnn_crop, ("progressive",), num_epochs=4,
                            **scale.training)
        trained = models(scale.stimulus, places, dcnns, num_epochs=8, **scale.training)
        learning_rates: tuple[float, ...] = (0.1,)
        description = (f"the quick demo's model (lr 0.1, 96,000 samples) and the progressive DCNN (48,000), tested "
                       f"with flankers {', '.join(dsets)}")
    else:
        dcnns = dcnn_models(scale.stimulus.digit_height, scale.dcnn_crop, **scale.training)
        trained = models(scale.stimulus, places, dcnns, **scale.training)
        learning_rates = LEARNING_RATES
        description = (f"the 11-1-1-1-1 model and the 3 DCNNs, trained on isolated digits, tested with flankers "
                       f"{', '.join(dsets)}")
    return scale.spec(name, models=trained, learning_rates=learning_rates,
                      grid=replace(scale.grid, flanker_dsets=dsets),
                      figures=scale.figures(comparisons(scale.spacing, dsets)), claims=claims(scale.spacing, dsets),
                      source=SourceConfig(), description=description)
