"""A look at the first records of a file, to refuse one of another format before anything is read:
an Amazon 2018 file named like a 2014 one holds ``verified``, a field 2014 never has."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from recgpt_data.io.storage import Location
from recgpt_data.io.streams import LineBlocks
from recgpt_data.sources.pyliteral import UnusableLiteral, literal_to_json

SNIFF_BYTES = 1 << 16
SNIFF_RECORDS = 20


def _parsed(line: bytes) -> dict | None:
    """A JSON or Python-literal object line as a dict, ``None`` where it is neither."""
    try:
        text = line.decode("utf-8")
        value = json.loads(text)
    except (UnicodeDecodeError, RecursionError):
        return None
    except ValueError:
        try:
            value = json.loads(literal_to_json(text))
        except (UnusableLiteral, ValueError, RecursionError):
            return None
    return value if isinstance(value, dict) else None


def first_records(path: Location) -> list[dict]:
    """Up to :data:`SNIFF_RECORDS` object records among the first lines (about 64 KiB) of ``path``
    (of an object, only as much of its stream as those lines take: reads of 64 KiB)."""
    for _, block, _ in LineBlocks(path, SNIFF_BYTES):
        found = [record for line in block.split(b"\n") if (record := _parsed(line)) is not None]
        return found[:SNIFF_RECORDS]
    return []


def fields_sniff(expected: tuple[str, ...], foreign: Mapping[str, str]) -> Callable[[Location], str | None]:
    """A sniff that refuses a file whose first records hold a ``foreign`` field (field -> the format
    it marks), or none of whose first records holds any ``expected`` field."""

    def sniff(path: Location) -> str | None:
        records = first_records(path)
        for record in records:
            for key, other in foreign.items():
                if key in record:
                    return f"its records have {key!r}, a field of {other} files"
        if records and not any(key in record for record in records for key in expected):
            return f"none of its first {len(records)} records has any of the fields {', '.join(expected)}"
        return None

    return sniff
