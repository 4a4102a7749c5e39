"""Readers shared by the sources: JSON lines (polars' parser on whole blocks, falling back to one
line at a time only where a block holds a bad record).

Every reader yields :class:`RawBatch` es whose frame carries :data:`LINE`, rejects what it cannot
parse with the line number and raw text, and reports records read and truncation in ``ReadState``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from recgpt_data.io.streams import LineBlocks
from recgpt_data.sources.base import LINE, RawBatch, ReadState, Reader, Reject


def decode(raw: bytes) -> str:
    """Raw bytes as text for a rejects file: UTF-8 where valid, else with replacement characters."""
    return raw.decode("utf-8", errors="replace")


def _lines_of(block: bytes) -> list[bytes]:
    return block.split(b"\n")


def _raw_lookup(first: int, block: bytes):
    lines: list[bytes] | None = None

    def raw_text(line: int) -> str:
        nonlocal lines
        if lines is None:
            lines = _lines_of(block)
        return decode(lines[line - first])

    return raw_text


def _truncation(path: Path, blocks: LineBlocks, state: ReadState) -> Iterator[RawBatch]:
    """Close a file read line by line: count records, report a cut stream and its partial record."""
    state.records = blocks.lines
    if blocks.truncated:
        state.truncated = True
        state.warning = f"{path.name}: {blocks.error}; kept the {blocks.lines} complete lines before the cut"
    if blocks.partial is not None:
        state.records += 1
        line = blocks.lines + 1
        yield RawBatch(pl.DataFrame(), [Reject(line, "truncated_record", decode(blocks.partial))], lambda _: "")


def ndjson(schema: dict[str, pl.DataType]) -> Reader:
    """A reader of JSON lines whose wanted fields and types are ``schema`` (other fields ignored)."""

    def read(path: Path, state: ReadState) -> Iterator[RawBatch]:
        blocks = LineBlocks(path)
        for first, block, count in blocks:
            yield _ndjson_block(first, block, count, schema)
        yield from _truncation(path, blocks, state)

    return read


def _ndjson_block(first: int, block: bytes, count: int, schema: dict[str, pl.DataType]) -> RawBatch:
    raw_text = _raw_lookup(first, block)
    if b"\n\n" not in block and block.strip():
        try:
            frame = pl.read_ndjson(io.BytesIO(block), schema=schema)
        except Exception:  # noqa: BLE001 - any parser error sends the block to the slow path
            frame = None
        if frame is not None and frame.height == count:
            lines = pl.int_range(first, first + count, eager=True, dtype=pl.Int64)
            return RawBatch(frame.with_columns(lines.alias(LINE)), [], raw_text)
    return _ndjson_slow(first, _lines_of(block), schema, raw_text)


def _ndjson_slow(first: int, lines: list[bytes], schema: dict[str, pl.DataType], raw_text) -> RawBatch:
    """Parse line by line, rejecting blank, non-UTF-8, malformed and non-object lines, and lines
    whose field types do not fit the schema."""
    rejects: list[Reject] = []
    good: list[bytes] = []
    numbers: list[int] = []
    for offset, line in enumerate(lines):
        number = first + offset
        reason = _json_problem(line)
        if reason is None:
            try:
                pl.read_ndjson(io.BytesIO(line), schema=schema)
            except Exception:  # noqa: BLE001
                reason = "bad_field_type"
        if reason is None:
            good.append(line)
            numbers.append(number)
        else:
            rejects.append(Reject(number, reason, decode(line)))
    if good:
        frame = pl.read_ndjson(io.BytesIO(b"\n".join(good)), schema=schema)
        frame = frame.with_columns(pl.Series(LINE, numbers, pl.Int64))
    else:
        frame = pl.DataFrame(schema={**schema, LINE: pl.Int64})
    return RawBatch(frame, rejects, raw_text)


def _json_problem(line: bytes) -> str | None:
    if not line.strip():
        return "blank_line"
    try:
        value = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return "invalid_utf8"
    except ValueError:
        return "malformed_json"
    return None if isinstance(value, dict) else "not_an_object"
