"""Atomic file writes (temp file + os.replace) and validated JSON reads."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .identity import to_jsonable


class CorruptFileError(ValueError):
    """A file exists but cannot be used (truncated, invalid, wrong content)."""


def _tmp_path(path: Path) -> Path:
    # A plain open() (not mkstemp, which forces mode 0600) so files get the user's umask.
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], *, binary: bool = True) -> Path:
    """Call `write(fileobj)` on a temporary file beside `path`, fsync it, then rename it into place.

    Readers see either the old file or the complete new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "xb" if binary else "x") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    return atomic_write_bytes(path, text.encode())


def read_json(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when the file does not exist.

    Raises CorruptFileError when it exists but is not a JSON object holding the `required` keys."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise CorruptFileError(f"{path} is not valid JSON ({e}); delete it to redo that step") from e
    if not isinstance(obj, dict):
        raise CorruptFileError(f"{path} holds a {type(obj).__name__}, expected a JSON object")
    check_keys(path, obj, required)
    return obj


def update_json(path: str | os.PathLike, change: Callable[[dict[str, Any] | None], dict[str, Any] | None],
                *, timeout_s: float = 60.0) -> dict[str, Any] | None:
    """Read-modify-write a JSON record under `<path>.lock`: `change(current)` returns the new record
    (None: leave the file as it is). Two processes updating different keys of one record (a driver
    writing its exit status, --cancel writing that it cancelled it) both keep their key."""
    from filelock import FileLock  # here, not at the top: most readers of this module never lock

    path = Path(path)
    with FileLock(str(path) + ".lock", timeout=timeout_s):
        new = change(read_json(path))
        if new is not None:
            atomic_write_json(path, new)
        return new


def check_keys(path: str | os.PathLike, obj: Mapping[str, Any], required: Iterable[str]) -> None:
    """Raise CorruptFileError naming the file and the keys it lacks."""
    missing = [k for k in required if k not in obj]
    if missing:
        raise CorruptFileError(f"{path} lacks the keys {missing}")


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON line (a single write call, so a crash leaves at most one partial last line)."""
    line = json.dumps(to_jsonable(record), sort_keys=True) + "\n"
    with open(path, "a") as f:
        f.write(line)
        f.flush()


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a JSONL file; a torn last line (from a crash) is ignored, any other bad line raises."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise CorruptFileError(f"{path}:{i + 1} is not valid JSON ({e})") from e
    return out
