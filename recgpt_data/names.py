"""Names that become paths: datasets, pipeline specs, stage ids, benchmarks, shards.

Every such name is checked here, once, to a safe form: ASCII letters, digits, ``_``, ``.`` and
``-``, starting with a letter, digit or ``_`` (so never ``.``, ``..``, a hidden name or an option),
at most :data:`MAX_SEGMENT` characters; a dataset name is one to :data:`MAX_SEGMENTS` such segments
joined by ``/``. Separators, absolute paths, ``..``, control characters and look-alike Unicode
(full-width dots and slashes, combining marks) are refused outright rather than rewritten, so a name
means what it says. :func:`inside` resolves a path and refuses one that leaves its root.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from recgpt_data.errors import UsageError

MAX_SEGMENT = 100
MAX_SEGMENTS = 4
_SEGMENT = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{MAX_SEGMENT - 1}}}")
SHOWN = 80  # characters of an unsafe name quoted in an error


def shown(text: str, limit: int = SHOWN) -> str:
    """``text`` quoted for an error message: control and non-ASCII characters escaped, cut to
    ``limit`` characters with the full length noted, so hostile input never floods a terminal."""
    quoted = ascii(text[:limit])
    return quoted if len(text) <= limit else f"{quoted}... ({len(text):,} characters)"


def unsafe_reason(value: object, what: str, segments: int = 1) -> str | None:
    """Why ``value`` is not a safe ``what`` name of at most ``segments`` ``/``-joined parts, or ``None``."""
    if not isinstance(value, str):
        return f"{what} name must be text, got {type(value).__name__}"
    parts = value.split("/")
    if len(parts) > segments:
        return f"{what} name {shown(value)} is not safe as a path: it has more than {segments} part(s) joined by '/'"
    for part in parts:
        if not _SEGMENT.fullmatch(part):
            return (
                f"{what} name {shown(value)} is not safe as a path: use ASCII letters, digits, '_', '.' "
                f"and '-', starting with a letter, digit or '_' (at most {MAX_SEGMENT} characters"
                + (", parts joined by '/')" if segments > 1 else ")")
            )
    return None


def check_name(value: str, what: str = "a") -> str:
    """``value`` if it is a safe one-part name, else a :class:`UsageError` saying why."""
    reason = unsafe_reason(value, what)
    if reason is not None:
        raise UsageError(reason)
    return value


def check_dataset(value: str) -> str:
    """``value`` if it is a safe dataset name (``yelp``, ``amazon2018/All_Beauty``), else a :class:`UsageError`."""
    reason = unsafe_reason(value, "dataset", MAX_SEGMENTS)
    if reason is not None:
        raise UsageError(reason)
    return value


def _pydantic(check):
    """A validator for pydantic models: the same check, reported as a validation error."""

    def validate(value: str) -> str:
        try:
            return check(value)
        except UsageError as exc:
            raise ValueError(str(exc)) from None

    return AfterValidator(validate)


SafeName = Annotated[str, _pydantic(check_name)]
DatasetName = Annotated[str, _pydantic(check_dataset)]


def inside(root: Path, path: Path) -> Path:
    """``path`` resolved, if it lies under ``root`` (resolved); else a :class:`UsageError`."""
    base = Path(root).resolve()
    resolved = Path(path).resolve()
    if resolved != base and not resolved.is_relative_to(base):
        raise UsageError(f"refusing to write {shown(str(path), 200)}: it is outside {shown(str(root), 200)}")
    return resolved
