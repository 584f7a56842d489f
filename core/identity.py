"""Identity: configs to plain JSON and a short, stable hash of them (dora's signature); digests of bytes, files, arrays."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping
from os import PathLike
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


def bytes_digest(*chunks: bytes | memoryview, algorithm: str = "md5") -> str:
    """Hex digest of the concatenated `chunks` (hashlib's `algorithm`: md5, sha1, sha256...)."""
    h = hashlib.new(algorithm)
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def file_digest(path: str | PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, streamed (datasets are gigabytes)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.new(algorithm)).hexdigest()


def array_digest(array: Any, algorithm: str = "md5") -> str:
    """Hex digest of an array's raw bytes in C order (its dtype and shape are not part of it)."""
    import numpy as np  # here: core's other users (cluster) need no numpy

    return bytes_digest(np.ascontiguousarray(array).data, algorithm=algorithm)


def config_hash(cfg: Any, length: int = 12) -> str:
    """Identity of a run: the hash of its non-default fields, so adding a field with a default
    keeps every existing identity."""
    return digest(non_default(cfg), length)


def from_jsonable(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild a (nested) config dataclass from its JSON (`to_jsonable`); fields absent
    from `data` keep their defaults, so configs written before a field was added still load."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a {cls.__name__} must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; valid: {', '.join(sorted(names))}")
    hints = typing.get_type_hints(cls)
    default = cls()
    kwargs = {}
    for name, value in data.items():
        sub = getattr(default, name)
        if dataclasses.is_dataclass(sub):
            kwargs[name] = from_jsonable(type(sub), value)
        elif _is_float(hints[name]) and isinstance(value, (str, int)) and not isinstance(value, bool):
            kwargs[name] = float(value)  # "inf" is how to_jsonable writes infinity
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _is_float(tp: Any) -> bool:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return float in args
    return tp is float
