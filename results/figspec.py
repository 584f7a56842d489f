"""Where the paper's figures cut an evaluation grid: a sweep declares it, the figures read it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ecc.atomic import CorruptFileError, read_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FigureSpec:
    """Where the paper's four figures cut the evaluation grid (the demo's values by default; the
    quick demo might use spacings (60, 120) and far_target 360)."""

    spacings: tuple[float, ...] = (120.0, 240.0)  # one spacing figure each
    center_target: float = 0.0                    # target eccentricity of the "target at the centre" figure
    far_target: float = 720.0                     # target eccentricity of the "target far out" figure

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> FigureSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(obj) - known
        if unknown:
            raise ValueError(f"unknown FigureSpec fields {sorted(unknown)}; valid: {sorted(known)}")
        kw: dict[str, Any] = dict(obj)
        if "spacings" in kw:
            kw["spacings"] = tuple(float(s) for s in kw["spacings"])
        for key in ("center_target", "far_target"):
            if key in kw:
                kw[key] = float(kw[key])
        return cls(**kw)

    @classmethod
    def coerce(cls, spec: Any) -> FigureSpec:
        """A FigureSpec from another one, a mapping, or any object with the same attributes
        (sweeps.spec.FigureSpec)."""
        if isinstance(spec, cls):
            return spec
        if isinstance(spec, Mapping):
            return cls.from_json(spec)
        names = [f.name for f in fields(cls)]
        if not any(hasattr(spec, n) for n in names):
            raise TypeError(f"{spec!r} is not a figure spec: it has none of {names}")
        return cls.from_json({n: getattr(spec, n) for n in names if hasattr(spec, n)})

    @classmethod
    def for_experiment(cls, exp_dir: str | Path) -> FigureSpec:
        """The spec saved with the sweep (spec.json's "figures" object) or the defaults."""
        try:
            spec = read_json(Path(exp_dir) / "spec.json") or {}
        except CorruptFileError as e:
            logger.warning("using the default figure spec: %s", e)
            spec = {}
        figures = spec.get("figures") or spec.get("figure_spec")
        return cls.from_json(figures) if isinstance(figures, Mapping) else cls()
