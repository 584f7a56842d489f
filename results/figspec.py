"""Where the paper's figures cut an evaluation grid: a sweep declares it, the figures read it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from core.atomic import CorruptFileError, read_json
from core.layout import SPEC
from ecc.conditions import LABELS

logger = logging.getLogger(__name__)


COMPARISON_KINDS = ("spacing", "center", "matrix")
COMPARISON_BY = ("model", "flanker_dset")


def _check_fields(cls: type, obj: Mapping[str, Any]) -> None:
    """Refuse JSON keys that are not fields of `cls`, naming them and the valid ones."""
    known = {f.name for f in fields(cls)}
    unknown = set(obj) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}; valid: {sorted(known)}")


@dataclass(frozen=True)
class Comparison:
    """A figure that puts several models (or flanker sets) on one axis, with Wilson intervals and
    the chance line (results.compare.comparison_figure). kind:

    * spacing: x = target eccentricity, accuracy of `label` at `spacing` (label a: no flanker),
      one curve per model (by="model") or per flanker set (by="flanker_dset");
    * center: per model, accuracy of `label` at `spacing` with the target at the centre
      (FigureSpec.center_target) and off centre (`off_target`, default FigureSpec.far_target),
      next to the isolated target (a) at the centre;
    * matrix: train configuration (one row per model) x test configuration (a, xa, ax, xax) at
      `spacing`, accuracy pooled over the target eccentricities where the condition was tested."""

    kind: str
    label: str = "xax"
    spacing: float = 120.0
    by: str = "model"
    off_target: float | None = None
    flanker_dset: str = "MNIST"  # the flanker set of the compared rows (by="model")
    title: str = ""

    def __post_init__(self) -> None:
        if self.kind not in COMPARISON_KINDS:
            raise ValueError(f"comparison kind {self.kind!r} is not one of {', '.join(COMPARISON_KINDS)}")
        if self.by not in COMPARISON_BY:
            raise ValueError(f"comparison by {self.by!r} is not one of {', '.join(COMPARISON_BY)}")
        if self.label not in LABELS:
            raise ValueError(f"comparison label {self.label!r} is not one of {', '.join(LABELS)}")
        object.__setattr__(self, "spacing", float(self.spacing))
        if self.off_target is not None:
            object.__setattr__(self, "off_target", float(self.off_target))

    @property
    def stem(self) -> str:
        """File name of the figure (under figures/compare/)."""
        what = "matrix" if self.kind == "matrix" else f"{self.kind}_{self.label}"
        by = "" if self.by == "model" else f"_by_{self.by}"
        dset = "" if self.flanker_dset == "MNIST" or self.by == "flanker_dset" else f"_{self.flanker_dset}"
        return f"{what}_spacing_{self.spacing:g}{by}{dset}"

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Comparison:
        _check_fields(cls, obj)
        return cls(**obj)


@dataclass(frozen=True)
class FigureSpec:
    """Where the paper's four figures cut the evaluation grid (the full demo's values by default;
    a sweep declares its own: sweeps.settings.Scale.figures, e.g. the quick size's spacings 48 and
    96 and far_target 288)."""

    spacings: tuple[float, ...] = (120.0, 240.0)  # one spacing figure each
    center_target: float = 0.0                    # target eccentricity of the "target at the centre" figure
    far_target: float = 720.0                     # target eccentricity of the "target far out" figure
    comparisons: tuple[Comparison, ...] = ()      # figures comparing models (figures/compare/)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> FigureSpec:
        _check_fields(cls, obj)
        kw: dict[str, Any] = dict(obj)
        if "spacings" in kw:
            kw["spacings"] = tuple(float(s) for s in kw["spacings"])
        for key in ("center_target", "far_target"):
            if key in kw:
                kw[key] = float(kw[key])
        if "comparisons" in kw:
            kw["comparisons"] = tuple(c if isinstance(c, Comparison) else Comparison.from_json(c)
                                      for c in kw["comparisons"])
        return cls(**kw)

    @classmethod
    def for_experiment(cls, exp_dir: str | Path) -> FigureSpec:
        """The spec saved with the sweep (spec.json's "figures" object) or the defaults."""
        try:
            spec = read_json(Path(exp_dir) / SPEC) or {}
        except CorruptFileError as e:
            logger.warning("using the default figure spec: %s", e)
            spec = {}
        figures = spec.get("figures")
        return cls.from_json(figures) if isinstance(figures, Mapping) else cls()
