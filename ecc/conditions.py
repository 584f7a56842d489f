"""The condition vocabulary, without torch: Placement (where the target is and which flankers are
where), its labels a/xa/ax/xax and spacing, the number of classes, an evaluation's identity
(eval_hash), and how tables match eccentricities (ECC_ATOL, near, evaluated rows).

`results` and `--status` read conditions and labels from here, so they never load the model code.
TrainConfig and DatasetSpec hold a placement as flat fields (their identities are those fields);
they declare them with `placement_arg`, so help texts and choices have this one home.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from core.cli import arg, check_choice, check_choices
from core.identity import digest, non_default

from .geometry import FLANKER_TYPES, InvalidPlacement, StimulusConfig, check_placement
from .sources.config import FLANKER_DSETS, flanker_set

LABELS = ("a", "xa", "ax", "xax")  # the condition labels, in the figures' order
ECC_ATOL = 1e-6  # eccentricities (and spacings) within this are the same point


def num_classes(parity: str) -> int:
    """Classes of the task: the 10 digits with parity "none", else the 5 of one parity."""
    return 10 if str(parity) == "none" else 5


def condition_label(flanker_type: Any, target_ecc: Any, flanker_ecc: Any) -> str:
    """a (no flanker), xa (one flanker nearer the centre than the target), ax (one farther out, or as
    far: |flanker| = |target|), xax (two); "" when a value is missing (None or NaN, e.g. a table row)."""
    if _missing(flanker_type):
        return ""
    t = int(flanker_type)
    if t == 0:
        return "a"
    if t == 2:
        return "xax"
    if t == 1 and not _missing(flanker_ecc) and not _missing(target_ecc):
        return "xa" if abs(float(flanker_ecc)) < abs(float(target_ecc)) else "ax"
    return ""


def condition_spacing(flanker_type: Any, target_ecc: Any, flanker_ecc: Any) -> float:
    """|flanker_ecc - target_ecc|; NaN without flankers or when a value is missing (a table row)."""
    if _missing(flanker_type) or int(flanker_type) == 0 or _missing(flanker_ecc) or _missing(target_ecc):
        return math.nan
    return abs(float(flanker_ecc) - float(target_ecc))


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


@dataclass(frozen=True)
class Placement:
    """Where the target is, and which flankers are where (an evaluation's test condition)."""

    target_ecc: float = arg(0.0, "target eccentricity in pixels (horizontal offset from the centre)")
    flanker_ecc: float | None = arg(None, "flanker eccentricity in pixels (none for --flanker_type 0)")
    flanker_type: int = arg(0, "0 no flanker, 1 one flanker at --flanker_ecc, 2 two (also its mirror about "
                            "the target)", choices=FLANKER_TYPES)
    flanker_dset: str = arg("MNIST", "flanker images: MNIST (digits of the other parity), letters (A-J from "
                            "fonts), notMNIST or omniglot", choices=FLANKER_DSETS)

    def __post_init__(self) -> None:
        check_choice("flanker_type", self.flanker_type, FLANKER_TYPES, InvalidPlacement)
        check_choices(self)
        for name in ("target_ecc", "flanker_ecc"):
            value = getattr(self, name)
            if value is None and name == "flanker_ecc":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidPlacement(f"{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))  # 240 and 240.0: one identity
        if self.flanker_type and self.flanker_ecc is None:
            raise InvalidPlacement(f"flanker_type {self.flanker_type} needs a flanker_ecc")

    def canonical(self) -> Placement:
        """The same images, written one way: type 0 has no flanker_ecc and no flanker set (MNIST);
        type 2 names the flanker farther from the centre (its mirror about the target gives the
        same image)."""
        if self.flanker_type == 0:
            return replace(self, flanker_ecc=None, flanker_dset="MNIST")
        if self.flanker_type == 2:
            mirror = 2 * self.target_ecc - self.flanker_ecc  # type: ignore[operator]
            far = max(self.flanker_ecc, mirror, key=lambda e: (abs(e), e))  # type: ignore[type-var]
            return replace(self, flanker_ecc=float(far) + 0.0)  # + 0.0: no -0.0
        return self

    @property
    def label(self) -> str:
        """a, xa, ax or xax (condition_label)."""
        return condition_label(self.flanker_type, self.target_ecc, self.flanker_ecc)

    @property
    def spacing(self) -> float | None:
        """|flanker_ecc - target_ecc| (condition_spacing); None without flankers."""
        return None if self.flanker_type == 0 else condition_spacing(self.flanker_type, self.target_ecc, self.flanker_ecc)

    def check(self, stimulus: StimulusConfig) -> None:
        """Raise InvalidPlacement when these positions cannot be rendered in `stimulus`'s field (the
        model's geometry; the flankers at their set's own height, StimulusConfig.with_flankers)."""
        check_placement(stimulus.with_flankers(self.flanker_dset), self.target_ecc, self.flanker_type, self.flanker_ecc)


Condition = Placement  # an evaluation's test condition is a placement


def placement_arg(name: str, help: str | None = None, **changes: Any) -> Any:
    """Placement's field `name` for a config that holds a placement flat (TrainConfig, DatasetSpec):
    the same choices, its help text unless `help` replaces it, `changes` (default, aliases) applied."""
    f = {f.name: f for f in dataclasses.fields(Placement)}[name]
    meta = f.metadata
    return arg(changes.pop("default", f.default), meta["help"] if help is None else help,
               choices=meta["choices"], aliases=changes.pop("aliases", meta["aliases"]), **changes)


# The fields an evaluation's identity has always written out in full, defaults included: the names
# of every evaluation folder made so far depend on them. A field added to Placement later joins the
# identity only where it differs from its default (as a training's config_hash), so adding one
# renames no folder.
IDENTITY_FIELDS = ("target_ecc", "flanker_ecc", "flanker_type", "flanker_dset")


def eval_hash(model_hash: str, condition: Placement, test_images: int = 0) -> str:
    """Identity of an evaluation (its folder `eval/<hash>` and its result's "hash"), the one place
    it is computed: the trained run, the canonical condition, how many test images, and for a
    flanker set not drawn as the digits are (notMNIST, Omniglot) how it is drawn, so that an
    evaluation made before that rule (at the digits' height, untrimmed) is never taken for one made
    after it. The condition is written as IDENTITY_FIELDS plus any other non-default field."""
    cond = condition.canonical()
    written = {**{name: getattr(cond, name) for name in IDENTITY_FIELDS},
               **{k: v for k, v in non_default(cond).items() if k not in IDENTITY_FIELDS}}
    payload: dict[str, Any] = {"model": model_hash, "condition": written, "test_images": test_images}
    drawn = flanker_set(cond.flanker_dset)
    if not drawn.as_original:
        payload["flankers"] = {"height_at_120": drawn.height_at_120, "trim": drawn.trim}
    return digest(payload)


def near(values: pd.Series, x: float) -> pd.Series:
    """Which values are x (within ECC_ATOL)."""
    return pd.Series(np.isclose(values.to_numpy(float), x, atol=ECC_ATOL), index=values.index)


def evaluated(table: pd.DataFrame) -> pd.DataFrame:
    """The evaluation rows of a results table (a model and a condition; no training rows)."""
    return table[(table["model_hash"] != "") & table["flanker_type"].notna()]
