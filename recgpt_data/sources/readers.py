"""Readers shared by the sources: JSON lines (polars' parser on whole blocks, falling back to one
line at a time only where a block holds a bad record), :func:`exploded` for files that hold a list
of records per line, and :func:`with_raw_json` for nested objects kept in ``extras``.

A :class:`LineReader` parses every line on its own, with nothing carried from one line to the next,
so ingest may cut a big file of its role into blocks of lines and parse them in separate tasks.

Every reader yields :class:`RawBatch` es whose frame carries :data:`LINE`, rejects what it cannot
parse with the line number and raw text, and reports records read and truncation in ``ReadState``.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from queue import Full, Queue
from typing import TypeVar

import polars as pl

from recgpt_data.io.storage import Location, name_of
from recgpt_data.io.streams import LineBlocks
from recgpt_data.sources.base import LINE, RawBatch, Reader, ReadState, Reject

T = TypeVar("T")


def decode(raw: bytes) -> str:
    """Raw bytes as text for a rejects file: UTF-8 where valid, else with replacement characters."""
    return raw.decode("utf-8", errors="replace")


def raw_lookup(first: int, block: bytes) -> Callable[[int], str]:
    """A lookup from a line number of ``block`` (whose first line is ``first``) to its raw text."""
    lines: list[bytes] | None = None

    def raw_text(line: int) -> str:
        nonlocal lines
        if lines is None:
            lines = block.split(b"\n")
        return decode(lines[line - first])

    return raw_text


def truncation(path: Location, blocks: LineBlocks, state: ReadState) -> Iterator[RawBatch]:
    """Close a file read line by line: count records, report a cut stream and its partial record."""
    state.records = blocks.lines
    if blocks.truncated:
        state.truncated = True
        state.warning = f"{name_of(path)}: {blocks.error}; kept the {blocks.lines} complete lines before the cut"
    if blocks.partial is not None:
        state.records += 1
        line = blocks.first_line + blocks.lines
        yield RawBatch(pl.DataFrame(), [Reject(line, "truncated_record", decode(blocks.partial))], lambda _: "")


BlockParser = Callable[[int, bytes, int], RawBatch]
"""Parses ``count`` whole lines joined by LF, the first numbered ``first``: ``(first, block, count)``."""


@dataclass(frozen=True)
class LineReader:
    """A reader of files with one record a line, each parsed on its own by ``parse`` (nothing is
    carried from one line to the next): a file may be cut at any line break and its blocks parsed
    apart, each knowing the number of its first line, with the same rows and rejects."""

    parse: BlockParser

    def __call__(self, path: Location, state: ReadState) -> Iterator[RawBatch]:
        """The whole file, its cut end (if any) reported as a truncated record."""

        def batches() -> Iterator[RawBatch]:
            blocks = LineBlocks(path)
            yield from self.blocks(blocks)
            yield from truncation(path, blocks, state)

        return prefetched(batches())

    def blocks(self, blocks: Iterable[tuple[int, bytes, int]]) -> Iterator[RawBatch]:
        """The batches of ``blocks`` of lines (as :class:`LineBlocks` yields them)."""
        for first, block, count in blocks:
            yield self.parse(first, block, count)


def ndjson(schema: dict[str, pl.DataType]) -> LineReader:
    """A reader of JSON lines whose wanted fields and types are ``schema`` (other fields ignored)."""
    return LineReader(partial(_ndjson_block, schema=schema))


def prefetched(batches: Iterator[T], depth: int = 2) -> Iterator[T]:
    """``batches`` produced by a background thread up to ``depth`` ahead, in order, so that reading
    and parsing the next block overlaps the caller's mapping and writing of this one (polars,
    pyarrow, zlib and file reads release the GIL). Memory stays bounded by ``depth`` batches."""
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: object) -> None:
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.1)
                return
            except Full:
                continue

    def produce() -> None:
        try:
            for batch in batches:
                put(batch)
                if stop.is_set():
                    return
            put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            put(exc)

    thread = threading.Thread(target=produce, name="recgpt-read", daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def parse_block(block: bytes, count: int, schema: dict[str, pl.DataType]) -> pl.DataFrame | None:
    """``block`` of ``count`` JSON object lines parsed in one go, or ``None`` where any line is bad
    (blank, malformed, not an object, or of the wrong type). Polars skips blank lines, so a block
    holding one yields fewer than ``count`` rows and is refused."""
    try:
        frame = pl.read_ndjson(io.BytesIO(block), schema=schema)
    except Exception:  # noqa: BLE001 - any parser error sends the block to the line-by-line path
        return None
    return frame if frame.height == count else None


def _ndjson_block(first: int, block: bytes, count: int, schema: dict[str, pl.DataType]) -> RawBatch:
    raw_text = raw_lookup(first, block)
    frame = parse_block(block, count, schema)
    if frame is not None:
        lines = pl.int_range(first, first + count, eager=True, dtype=pl.Int64)
        return RawBatch(frame.with_columns(lines.alias(LINE)), [], raw_text)
    return json_lines_batch(list(range(first, first + count)), block.split(b"\n"), schema, raw_text)


def json_lines_batch(
    numbers: list[int], lines: list[bytes], schema: dict[str, pl.DataType], raw_text: Callable[[int], str]
) -> RawBatch:
    """JSON lines numbered ``numbers`` parsed one by one, rejecting blank, non-UTF-8, malformed,
    too deeply nested and non-object lines, and lines whose field types do not fit the schema (raw
    text from ``raw_text``)."""
    rejects: list[Reject] = []
    good: list[bytes] = []
    kept: list[int] = []
    for number, line in zip(numbers, lines):
        reason = _json_problem(line)
        if reason is None:
            good.append(line)
            kept.append(number)
        else:
            rejects.append(Reject(number, reason, raw_text(number)))
    frame = parse_block(b"\n".join(good), len(good), schema) if good else None
    if frame is None and good:
        typed = [parse_block(line, 1, schema) for line in good]
        rejects.extend(Reject(n, "bad_field_type", raw_text(n)) for n, f in zip(kept, typed) if f is None)
        kept = [n for n, f in zip(kept, typed) if f is not None]
        frames = [f for f in typed if f is not None]
        frame = pl.concat(frames) if frames else None
    if frame is None:
        frame = pl.DataFrame(schema=schema)
    frame = frame.with_columns(pl.Series(LINE, kept, pl.Int64))
    rejects.sort(key=lambda r: r.line)
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
    except RecursionError:
        return "nested_too_deep"
    return None if isinstance(value, dict) else "not_an_object"


def with_raw_json(encoded: pl.Expr, **raw: pl.Expr) -> pl.Expr:
    """``encoded`` (a JSON object, e.g. from ``struct.json_encode``) with members whose values are
    already JSON text (nested objects read as strings) spliced in as they are; null ones left out."""
    out = encoded
    for name, value in raw.items():
        member = pl.concat_str(pl.lit(json.dumps(name) + ":"), value)
        out = (
            pl.when(value.is_null())
            .then(out)
            .when(out == "{}")
            .then(pl.concat_str(pl.lit("{"), member, pl.lit("}")))
            .otherwise(pl.concat_str(out.str.head(-1), pl.lit(","), member, pl.lit("}")))
        )
    return out


def exploded(reader: Reader, column: str, empty_reason: str) -> Reader:
    """``reader`` with each line's list ``column`` of structs turned into one record per element
    (their fields become columns); a line whose list is empty or null is rejected as ``empty_reason``.
    Records read count elements, so read = kept + rejected still holds."""

    def read(path: Location, state: ReadState) -> Iterator[RawBatch]:
        extra = 0
        for batch in reader(path, state):
            if not batch.frame.height:
                yield batch
                continue
            sizes = batch.frame.get_column(column).list.len().fill_null(0)
            empty = batch.frame.filter(sizes == 0).get_column(LINE).to_list()
            rejects = batch.rejects + [Reject(n, empty_reason, batch.raw_text(n)) for n in empty]
            rejects.sort(key=lambda r: r.line)
            extra += int(sizes.sum()) - (batch.frame.height - len(empty))
            frame = batch.frame.filter(sizes > 0).explode(column).unnest(column)
            yield RawBatch(frame, rejects, batch.raw_text)
        state.records += extra

    return read
