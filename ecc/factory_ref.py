"""A factory reference and its keyword arguments as a config stores them, torch-free (the loading,
the checks on a sample batch and the wrapper are in ecc/factory.py): the views, normalize_ref (a
file path made absolute), canonical_kwargs (a canonical JSON object), FactoryError."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

VIEWS = ("scales", "field")
TIMM = "timm:"
STANDARD_ARGS = ("num_classes", "in_chans", "input_size", "view")
EXAMPLE = "mylab.nets:resnet_small or path/to/nets.py:make or timm:resnet18"


class FactoryError(ValueError):
    """A factory that cannot give a network of the study (one line: the reference and what is wrong)."""


def normalize_ref(ref: str) -> str:
    """The stored form of a reference: a file path made absolute; anything else as written."""
    if not isinstance(ref, str) or ":" not in ref.strip(":") or ref != ref.strip():
        raise FactoryError(f"factory {ref!r} must be MODULE:FUNCTION, FILE.py:FUNCTION or timm:NAME, "
                           f"e.g. {EXAMPLE}")
    if ref.startswith(TIMM):
        return ref
    target, _, attr = ref.rpartition(":")
    if not attr.isidentifier():
        raise FactoryError(f"factory {ref!r}: {attr!r} is not a function name (MODULE:FUNCTION, e.g. {EXAMPLE})")
    if target.endswith(".py"):
        return f"{os.path.abspath(os.path.expanduser(target))}:{attr}"
    return ref


def canonical_kwargs(kwargs: str | Mapping[str, Any]) -> str:
    """Keyword arguments as the config stores them: a canonical JSON object ("" when none)."""
    if isinstance(kwargs, str):
        if not kwargs:
            return ""
        try:
            kwargs = json.loads(kwargs)
        except json.JSONDecodeError as e:
            raise FactoryError(f"factory_kwargs {kwargs!r} is not a JSON object ({e})") from None
    if not isinstance(kwargs, Mapping):
        raise FactoryError(f"factory_kwargs must be a mapping of names to values, got {kwargs!r}")
    bad = [k for k in kwargs if not isinstance(k, str) or k in STANDARD_ARGS]
    if bad:
        raise FactoryError(f"factory_kwargs {bad} are not allowed: the names {', '.join(STANDARD_ARGS)} "
                           "are given by the stimulus")
    try:
        return json.dumps(dict(kwargs), sort_keys=True, separators=(",", ":"), allow_nan=False) if kwargs else ""
    except (TypeError, ValueError) as e:
        raise FactoryError(f"factory_kwargs {dict(kwargs)!r} must be JSON values ({e})") from None
