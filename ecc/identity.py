"""Run identity: configs to plain JSON and a short, stable hash of them (dora's signature)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import PurePath
from typing import Any


def to_jsonable(obj: Any) -> Any:
    """Plain JSON value for a config: dataclasses become dicts, inf/nan become strings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, float):
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        if math.isnan(obj):
            return "nan"
        return obj
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    return obj


def non_default(cfg: Any) -> dict[str, Any]:
    """The fields of a dataclass that differ from its defaults, recursively, as JSON values."""
    default = type(cfg)()
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value, ref = getattr(cfg, f.name), getattr(default, f.name)
        if dataclasses.is_dataclass(value) and type(value) is type(ref):
            sub = non_default(value)
            if sub:
                out[f.name] = sub
        elif to_jsonable(value) != to_jsonable(ref):
            out[f.name] = to_jsonable(value)
    return out


def digest(payload: Any, length: int = 12) -> str:
    """sha1 of the canonical (sorted, compact) JSON of a value."""
    text = json.dumps(to_jsonable(payload), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def config_hash(cfg: Any, length: int = 12) -> str:
    """Identity of a run: the hash of its non-default fields, so adding a field with a default
    keeps every existing identity."""
    return digest(non_default(cfg), length)
