"""Readers for separator-delimited text: quoted CSV (fields may hold newlines), unquoted
separator files (``\\t``, ``|``, ``::``), BookCrossing's every-field-quoted files, and Netflix's
block files (``MOVIE_ID:`` header lines, then that movie's rows).

All stream a file as blocks of whole lines (:class:`~recgpt_data.io.streams.LineBlocks`: plain,
``.gz``, ``.bz2``, truncated-gzip-safe) and yield :class:`RawBatch` es of string columns named
after the file's header (or the dialect's column list), plus :data:`LINE`: the 1-based number of
the data record in its file (a header is not a record; a quoted record spanning several lines is
one record). Blank lines, rows with the wrong number of fields, malformed quoting, bytes that are
not in the file's encoding and values that do not fit a typed column become rejects with a reason.

A stray double quote (``1,ab"c,3``) must not swallow the records after it: where lines joined by
quotes do not parse as one record, or a quote is still open at the end of the file, the first of
those lines is read as a record of its own and the lines after it are grouped again.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from recgpt_data.errors import UsageError
from recgpt_data.io.storage import Location, name_of
from recgpt_data.io.streams import CHUNK_BYTES, LineBlocks
from recgpt_data.names import shown
from recgpt_data.sources.base import LINE, RawBatch, Reader, ReadState, Reject
from recgpt_data.sources.readers import decode

UTF8 = "utf-8"
LATIN1 = "latin-1"
UTF8_OR_LATIN1 = "utf-8|latin-1"  # UTF-8 until a block is not, then ISO-8859-1 for the rest of the file
_SENTINEL = "\x1e"  # an extra last field on every record: a short or long row moves it
_UNIT = "\x1f"  # the separator that multi-character and BookCrossing separators are rewritten to
_IN_FIELD = b"\x1d"  # stands for a newline inside a quoted field while records are split on LF
MAX_OPEN_BYTES = 16 << 20  # a quoted record longer than this is taken for a stray quote
# The csv module (the record-by-record path) refuses fields over 128 KiB by default; records are
# bounded by MAX_OPEN_BYTES and the line length instead, so the module's own limit is lifted.
csv.field_size_limit(max(csv.field_size_limit(), (1 << 31) - 1))


@dataclass(frozen=True)
class Dialect:
    """How a delimited file is written.

    ``quoting``: RFC 4180 double quotes (fields may hold separators, ``""`` and newlines).
    ``all_quoted``: BookCrossing style, every field in quotes (or a bare ``NULL``) joined by
    ``";"``, quotes inside fields left unescaped. ``last_takes_rest``: split on the first
    ``len(columns) - 1`` separators only (Netflix titles hold unquoted commas).
    ``types``: columns cast on read; a non-empty value that does not cast is a reject ``bad_<column>``.
    ``required``: header columns the file must have."""

    separator: str = ","
    quoting: bool = True
    header: bool = True
    columns: tuple[str, ...] = ()
    encoding: str = UTF8
    types: dict[str, pl.DataType] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    all_quoted: bool = False
    last_takes_rest: bool = False


def delimited(dialect: Dialect, chunk_bytes: int = CHUNK_BYTES, max_open: int = MAX_OPEN_BYTES) -> Reader:
    """A reader of files written in ``dialect``, taking ``chunk_bytes`` of input at a time; a quoted
    record may span at most ``max_open`` bytes."""

    def read(path: Location, state: ReadState) -> Iterator[RawBatch]:
        yield from _DelimitedFile(path, dialect, chunk_bytes, max_open).batches(state)

    return read


def movie_blocks(dialect: Dialect, key: str, chunk_bytes: int = CHUNK_BYTES) -> Reader:
    """A reader of block files (Netflix Prize ``combined_data_*.txt``, ``mv_*.txt``): a line
    ``<id>:`` opens a block whose rows, written in ``dialect``, all get ``key`` = ``<id>``.
    Header lines are not records; rows before the first header are rejected."""

    def read(path: Location, state: ReadState) -> Iterator[RawBatch]:
        yield from _BlockFile(path, dialect, key, chunk_bytes).batches(state)

    return read


class _Decoder:
    """Bytes to text by the file's encoding policy; records that are not text become rejects."""

    def __init__(self, encoding: str):
        self.policy = encoding
        self.current = LATIN1 if encoding == LATIN1 else UTF8

    def utf8(self, data: bytes) -> bytes:
        """``data`` as UTF-8 bytes for polars, which checks it: a file read as UTF-8 is passed as it
        is (a block polars finds invalid goes record by record), one read as ISO-8859-1 transcoded."""
        return data if self.current == UTF8 else data.decode(LATIN1).encode(UTF8)

    def records(self, records: list[bytes]) -> list[str | None]:
        """Each record as text, or ``None`` where it is not valid in the file's encoding."""
        joined = b"\n".join(records)
        try:
            text = joined.decode(self.current)
        except UnicodeDecodeError:
            if self.policy == UTF8_OR_LATIN1:
                self.current = LATIN1
                text = joined.decode(LATIN1)
            else:
                return [_utf8_or_none(record) for record in records]
        if len(records) == text.count("\n") + 1:
            return text.split("\n")
        return [record.decode(self.current) for record in records]


def _utf8_or_none(record: bytes) -> str | None:
    try:
        return record.decode(UTF8)
    except UnicodeDecodeError:
        return None


@dataclass
class _Block:
    """Consecutive records joined by LF in ``data``. A newline inside a quoted field is written as
    :data:`_IN_FIELD` where ``embedded``; ``grouped`` lists the records instead where the data
    itself holds that byte."""

    data: bytes
    embedded: bool = False
    grouped: list[bytes] | None = None

    def records(self) -> list[bytes]:
        """The records, with their own newlines."""
        if self.grouped is not None:
            return self.grouped
        records = self.data.split(b"\n")
        return [r.replace(_IN_FIELD, b"\n") for r in records] if self.embedded else records

    def count(self) -> int:
        return len(self.grouped) if self.grouped is not None else self.data.count(b"\n") + 1

    def without_first(self) -> tuple[bytes, _Block | None]:
        """The first record, and the block of the others (``None`` if there are none)."""
        if self.grouped is not None:
            rest = self.grouped[1:]
            return self.grouped[0], (_Block(b"\n".join(rest), grouped=rest) if rest else None)
        first, newline, rest = self.data.partition(b"\n")
        return first.replace(_IN_FIELD, b"\n"), (_Block(rest, self.embedded) if newline else None)


class _Records:
    """Splits blocks of lines into records: a newline after an odd number of double quotes is
    inside a quoted field (quoted CSV); a record still open at the end of a block carries over to
    the next one. A record left open for more than ``max_open`` bytes (a stray quote) is cut back
    to its first line, which becomes a record of its own (and fails to parse), and the lines after
    it are read again."""

    def __init__(self, quoting: bool, max_open: int):
        self.quoting = quoting
        self.max_open = max_open
        self.open: bytes | None = None

    def feed(self, data: bytes) -> list[_Block]:
        if self.open is not None:
            data, self.open = self.open + b"\n" + data, None
        blocks: list[_Block] = []
        while True:
            block, rest = self._split(data)
            blocks += [block] if block is not None else []
            if rest is None or len(rest) <= self.max_open:
                self.open = rest
                return blocks
            head, _, data = rest.partition(b"\n")
            blocks.append(_Block(head))
            if not data:
                return blocks

    def finish(self) -> list[_Block]:
        """The records of a quote still open at the end of the input: its first line (which holds
        the unpaired quote) becomes a record of its own, and the lines after it are grouped again."""
        blocks: list[_Block] = []
        while self.open is not None:
            head, newline, rest = self.open.partition(b"\n")
            self.open = None
            blocks.append(_Block(head))
            if newline:
                blocks += self.feed(rest)
        return blocks

    def _split(self, data: bytes) -> tuple[_Block | None, bytes | None]:
        """The whole records at the start of ``data``, and the open record after them."""
        if not self.quoting or b'"' not in data:
            return _Block(data), None
        codes = np.frombuffer(data, dtype=np.uint8)
        newlines = np.flatnonzero(codes == ord("\n"))
        quotes = np.flatnonzero(codes == ord('"'))
        inside = np.searchsorted(quotes, newlines) % 2 == 1
        rest = None
        if len(quotes) % 2:
            ends = newlines[~inside]
            if not len(ends):
                return None, data
            cut = int(ends[-1])
            data, rest = data[:cut], data[cut + 1 :]
            inside = inside[newlines < cut]
            newlines = newlines[newlines < cut]
        if not inside.any():
            return _Block(data), rest
        if _IN_FIELD not in data:
            marked = codes[: len(data)].copy()
            marked[newlines[inside]] = ord(_IN_FIELD)
            return _Block(marked.tobytes(), embedded=True), rest
        starts = np.concatenate(([0], newlines[~inside] + 1))
        stops = np.concatenate((newlines[~inside], [len(data)]))
        return _Block(data, grouped=[data[i:j] for i, j in zip(starts.tolist(), stops.tolist())]), rest


class _DelimitedFile:
    """One delimited file being read."""

    def __init__(self, path: Location, dialect: Dialect, chunk_bytes: int, max_open: int):
        self.path = path
        self.dialect = dialect
        self.chunk_bytes = chunk_bytes
        self.max_open = max_open
        self.decoder = _Decoder(dialect.encoding)
        self.names: list[str] | None = list(dialect.columns) if not dialect.header else None
        self.count = 0

    def batches(self, state: ReadState) -> Iterator[RawBatch]:
        blocks = LineBlocks(self.path, self.chunk_bytes)
        grouper = _Records(self.dialect.quoting, self.max_open)
        for _, data, _ in blocks:
            for block in grouper.feed(data):
                if self.names is None:
                    header, block = block.without_first()
                    self.names = self._header(header)
                if block is not None:
                    yield self._batch(block)
        if blocks.partial is not None:
            unfinished = [part for part in (grouper.open, blocks.partial) if part is not None]
            self.count += 1
            yield RawBatch(
                pl.DataFrame(), [Reject(self.count, "truncated_record", decode(b"\n".join(unfinished)))], lambda _: ""
            )
        else:
            for block in grouper.finish():
                if self.names is None:
                    header, block = block.without_first()
                    self.names = self._header(header)
                if block is not None:
                    yield self._batch(block)
        state.records = self.count
        if blocks.truncated:
            state.truncated = True
            state.warning = f"{name_of(self.path)}: {blocks.error}; kept the records before the cut"
        elif self.names is None:
            state.warning = f"{name_of(self.path)}: empty file, no header"

    def _header(self, record: bytes) -> list[str]:
        text = self.decoder.records([record])[0] or decode(record)
        if self.dialect.all_quoted:
            names = _unquote_all(text, self.dialect.separator).split(_UNIT)
        elif self.dialect.quoting:
            names = next(csv.reader([text], delimiter=self.dialect.separator))
        else:
            names = text.split(self.dialect.separator)
        names = [name.strip().lstrip("\ufeff") for name in names]
        missing = [c for c in self.dialect.required if c not in names]
        if missing:
            raise UsageError(
                f"{name_of(self.path)}: header lacks column(s) {', '.join(missing)}; found {shown(', '.join(names), 200)}"
            )
        return names

    def _batch(self, block: _Block) -> RawBatch:
        first = self.count + 1
        count = block.count()
        whole = self.decoder.utf8(block.data)
        frame = None
        if block.grouped is None or whole is block.data:
            frame = _read_block(whole, block.grouped, count, self.names, self.dialect)
        if frame is not None:
            self.count += count
            raw_text = _raw_lookup(first, block.records)
            if block.embedded:
                frame = frame.with_columns(
                    pl.col(n).str.replace_all(_IN_FIELD.decode(), "\n", literal=True) for n in self.names
                )
            frame, rejects = frame.with_columns(pl.int_range(first, first + count, dtype=pl.Int64).alias(LINE)), []
        else:
            records = block.records()
            if self.dialect.quoting and not self.dialect.all_quoted:
                records = self._regrouped(records)
            self.count += len(records)
            raw_text = _raw_lookup(first, lambda: records)
            frame, rejects = self._records(records, first, raw_text)
        frame, failed = _cast(frame, self.dialect.types)
        rejects += [Reject(n, reason, raw_text(n)) for n, reason in failed]
        return RawBatch(frame, sorted(rejects, key=lambda r: r.line), raw_text)

    def _regrouped(self, records: list[bytes]) -> list[bytes]:
        """``records`` with each one that spans lines but does not parse as one record (lines joined
        by stray quotes) taken apart: its first line alone, then the lines after it grouped again."""
        out: list[bytes] = []
        pending = records[::-1]
        while pending:
            record = pending.pop()
            if b"\n" not in record or _one_record(decode(record), self.dialect.separator):
                out.append(record)
                continue
            head, _, rest = record.partition(b"\n")
            grouper = _Records(quoting=True, max_open=self.max_open)
            again = [r for b in grouper.feed(rest) + grouper.finish() for r in b.records()]
            out.append(head)
            pending.extend(again[::-1])
        return out

    def _records(self, records: list[bytes], first: int, raw_text) -> tuple[pl.DataFrame, list[Reject]]:
        """Parse record by record, rejecting each record that does not decode, split or parse."""
        texts = self.decoder.records(records)
        numbers = range(first, first + len(records))
        rejects = [Reject(n, "invalid_utf8", raw_text(n)) for n, t in zip(numbers, texts) if t is None]
        good = [(n, t) for n, t in zip(numbers, texts) if t is not None]
        lines = pl.Series(LINE, [n for n, _ in good], pl.Int64)
        values = [t for _, t in good]
        if self.dialect.quoting and not self.dialect.all_quoted:
            frame, bad = _parse_quoted(values, lines, self.names, self.dialect.separator)
        else:
            separator = self.dialect.separator
            if self.dialect.all_quoted:
                values, separator = [_unquote_all(v, separator) for v in values], _UNIT
            text = pl.DataFrame([lines, pl.Series("__text", values, pl.String)])
            frame, bad = _split_unquoted(text, self.names, separator, self.dialect.last_takes_rest)
        return frame, rejects + bad


def _read_block(
    data: bytes, grouped: list[bytes] | None, count: int, names: Sequence[str], dialect: Dialect
) -> pl.DataFrame | None:
    """``count`` records of UTF-8 ``data`` parsed whole by polars (``grouped``: the records, where
    some span lines), or ``None`` where any record is blank, has the wrong number of fields or does
    not parse: the caller then goes record by record."""
    separator, quote = dialect.separator, '"' if dialect.quoting and not dialect.all_quoted else None
    if dialect.last_takes_rest:
        return None
    if dialect.all_quoted:
        try:
            data, separator = _unquote_all(data.decode(UTF8), separator).encode(UTF8), _UNIT
        except UnicodeDecodeError:
            return None
    elif len(separator) > 1:
        if _UNIT.encode() in data:
            return None
        data, separator = data.replace(separator.encode(UTF8), _UNIT.encode()), _UNIT
    suffix = f"{separator}{_SENTINEL}".encode(UTF8)
    if grouped is None:
        payload = data.replace(b"\n", suffix + b"\n") + suffix
    else:
        payload = b"\n".join(record + suffix for record in grouped)
    return _read_csv(payload, names, separator, quote, count)


def _read_csv(
    payload: bytes, names: Sequence[str], separator: str, quote: str | None, rows: int
) -> pl.DataFrame | None:
    """``payload`` (records each ending in the sentinel field) as string columns ``names``, or
    ``None`` unless polars reads exactly ``rows`` rows with the sentinel in its place on each."""
    schema = {name: pl.String() for name in names} | {"__sentinel": pl.String()}
    try:
        frame = pl.read_csv(
            payload,
            has_header=False,
            new_columns=list(schema),
            schema=schema,
            separator=separator,
            quote_char=quote,
            empty_string_is_null=False,
            raise_if_empty=False,
        )
    except Exception:  # noqa: BLE001 - any parser error sends the block to the record-by-record path
        return None
    if frame.height != rows or not (frame["__sentinel"] == _SENTINEL).all():
        return None
    return _nulls_for_empty(frame.drop("__sentinel"), names)


def _raw_lookup(first: int, split: Callable[[], list[bytes]]) -> Callable[[int], str]:
    """Record number -> raw text, for records numbered from ``first`` that ``split`` lists (called
    once, at the first lookup)."""
    records: list[bytes] | None = None

    def raw_text(line: int) -> str:
        nonlocal records
        if records is None:
            records = split()
        return decode(records[line - first])

    return raw_text


@functools.cache
def _bare_null(separator: str) -> re.Pattern[str]:
    return re.compile(f"(^|{re.escape(separator)})NULL(?={re.escape(separator)}|$)", re.MULTILINE)


_OUTER_QUOTES = re.compile(r'^"|"$', re.MULTILINE)


def _unquote_all(text: str, separator: str) -> str:
    """BookCrossing records (one a line) with their fields joined by ``\\x1f``: every field is
    ``"..."`` (quotes inside left as they are) or a bare ``NULL``, so fields split on ``";"`` only."""
    text = _OUTER_QUOTES.sub("", _bare_null(separator).sub(r'\1"NULL"', text))
    return text.replace(f'"{separator}"', _UNIT)


def _split_unquoted(
    frame: pl.DataFrame, names: Sequence[str], separator: str, last_takes_rest: bool, keep: Sequence[str] = ()
) -> tuple[pl.DataFrame, list[Reject]]:
    """Split the unquoted records in column ``__text`` on ``separator`` into ``names`` (columns
    ``keep`` pass through); blank records and wrong field counts are rejects."""
    width = len(names)
    if last_takes_rest:
        parts = pl.col("__text").str.splitn(separator, width)
        frame = frame.with_columns(parts.alias("__parts"))
        fields = [pl.col("__parts").struct.field(f"field_{i}").alias(name) for i, name in enumerate(names)]
        ok = pl.col(names[-1]).is_not_null()
    else:
        frame = frame.with_columns(pl.col("__text").str.split(separator).alias("__parts"))
        fields = [pl.col("__parts").list.get(i, null_on_oob=True).alias(name) for i, name in enumerate(names)]
        ok = pl.col("__parts").list.len() == width
    frame = frame.with_columns(*fields).with_columns(
        pl.when(pl.col("__text").str.strip_chars() == "")
        .then(pl.lit("blank_line"))
        .when(~ok)
        .then(pl.lit("wrong_field_count"))
        .alias("__reject")
    )
    rejects = [
        Reject(line, reason, text)
        for line, reason, text in frame.filter(pl.col("__reject").is_not_null())
        .select(LINE, "__reject", "__text")
        .iter_rows()
    ]
    kept = frame.filter(pl.col("__reject").is_null()).select(*names, *keep, LINE)
    return _nulls_for_empty(kept, names), rejects


def _parse_quoted(
    values: list[str], lines: pl.Series, names: Sequence[str], separator: str
) -> tuple[pl.DataFrame, list[Reject]]:
    """Parse RFC 4180 records with polars, or record by record with the csv module where polars
    cannot take them all (a bad record among them)."""
    payload = "\n".join(f"{v}{separator}{_SENTINEL}" for v in values).encode(UTF8)
    frame = _read_csv(payload, names, separator, '"', len(values)) if values else None
    if frame is not None:
        return frame.with_columns(lines), []
    return _parse_quoted_slow(values, lines, names, separator, len(names))


def _parse_quoted_slow(
    values: list[str], lines: pl.Series, names: Sequence[str], separator: str, width: int
) -> tuple[pl.DataFrame, list[Reject]]:
    rows: list[list[str]] = []
    numbers: list[int] = []
    rejects: list[Reject] = []
    for number, text in zip(lines.to_list(), values):
        if not text.strip():
            rejects.append(Reject(number, "blank_line", text))
            continue
        try:
            parsed = list(csv.reader(io.StringIO(text, newline=""), delimiter=separator, strict=True))
        except csv.Error:
            parsed = []
        if len(parsed) != 1:  # lines joined by unpaired quotes are no one record
            rejects.append(Reject(number, "unterminated_quote" if text.count('"') % 2 else "malformed_csv", text))
            continue
        fields = parsed[0]
        if len(fields) != width:
            rejects.append(Reject(number, "wrong_field_count", text))
            continue
        rows.append(fields)
        numbers.append(number)
    columns = {name: [row[i] for row in rows] for i, name in enumerate(names)}
    frame = pl.DataFrame(columns, schema={name: pl.String() for name in names}).with_columns(
        pl.Series(LINE, numbers, pl.Int64)
    )
    return _nulls_for_empty(frame, names), rejects


def _one_record(text: str, separator: str) -> bool:
    """Whether ``text`` parses as exactly one RFC 4180 record."""
    try:
        return len(list(csv.reader(io.StringIO(text, newline=""), delimiter=separator, strict=True))) == 1
    except csv.Error:
        return False


def _nulls_for_empty(frame: pl.DataFrame, names: Sequence[str]) -> pl.DataFrame:
    return frame.with_columns(pl.when(pl.col(n) != "").then(pl.col(n)).alias(n) for n in names)


def _cast(frame: pl.DataFrame, types: dict[str, pl.DataType]) -> tuple[pl.DataFrame, list[tuple[int, str]]]:
    """Cast typed columns; rows whose non-empty value does not cast are dropped and returned as
    ``(line, "bad_<column>")``."""
    wanted = {c: t for c, t in types.items() if c in frame.columns}
    if not wanted or not frame.height:
        return frame.with_columns(pl.col(c).cast(t, strict=False) for c, t in wanted.items()), []
    casts = {c: pl.col(c).str.strip_chars().cast(t, strict=False) for c, t in wanted.items()}
    reason = pl.lit(None, pl.String)
    for column in reversed(wanted):
        failed = pl.col(column).is_not_null() & casts[column].is_null()
        reason = pl.when(failed).then(pl.lit(f"bad_{column}")).otherwise(reason)
    frame = frame.with_columns(reason.alias("__reject"))
    failed_rows = list(frame.filter(pl.col("__reject").is_not_null()).select(LINE, "__reject").iter_rows())
    kept = frame.filter(pl.col("__reject").is_null()).drop("__reject")
    return kept.with_columns(expr.alias(c) for c, expr in casts.items()), failed_rows


class _BlockFile:
    """One block file being read: header lines set ``key`` for the rows after them."""

    def __init__(self, path: Location, dialect: Dialect, key: str, chunk_bytes: int):
        self.path = path
        self.dialect = dialect
        self.key = key
        self.chunk_bytes = chunk_bytes
        self.decoder = _Decoder(dialect.encoding)
        self.current: str | None = None
        self.count = 0

    def batches(self, state: ReadState) -> Iterator[RawBatch]:
        blocks = LineBlocks(self.path, self.chunk_bytes)
        for _, block, _ in blocks:
            yield self._batch(block.split(b"\n"))
        if blocks.partial is not None:
            self.count += 1
            yield RawBatch(
                pl.DataFrame(), [Reject(self.count, "truncated_record", decode(blocks.partial))], lambda _: ""
            )
        state.records = self.count
        if blocks.truncated:
            state.truncated = True
            state.warning = f"{name_of(self.path)}: {blocks.error}; kept the records before the cut"

    def _batch(self, raw_lines: list[bytes]) -> RawBatch:
        texts = self.decoder.records(raw_lines)
        frame = pl.DataFrame(
            {"__text": [t if t is not None else "" for t in texts], "__valid": [t is not None for t in texts]},
            schema={"__text": pl.String(), "__valid": pl.Boolean()},
        )
        header = pl.col("__valid") & pl.col("__text").str.strip_chars().str.ends_with(":")
        frame = frame.with_columns(
            header.alias("__header"),
            pl.when(header).then(pl.col("__text").str.strip_chars().str.strip_suffix(":")).alias(self.key),
        ).with_columns(pl.col(self.key).forward_fill().fill_null(pl.lit(self.current, pl.String)))
        if frame.height:
            self.current = frame[self.key][-1]
        raws = [line for line, is_header in zip(raw_lines, frame["__header"].to_list()) if not is_header]
        first = self.count + 1
        self.count += len(raws)
        raw_text = _raw_lookup(first, lambda: raws)
        rows = frame.filter(~pl.col("__header")).with_columns(
            pl.int_range(first, first + len(raws), dtype=pl.Int64).alias(LINE)
        )
        orphan = pl.col("__valid") & pl.col(self.key).is_null()
        rejects = [Reject(n, "invalid_utf8", raw_text(n)) for n in rows.filter(~pl.col("__valid"))[LINE]]
        rejects += [Reject(n, "no_block_header", raw_text(n)) for n in rows.filter(orphan)[LINE]]
        rows = rows.filter(pl.col("__valid") & pl.col(self.key).is_not_null())
        frame, bad = _split_unquoted(rows, self.dialect.columns, self.dialect.separator, False, keep=(self.key,))
        frame, failed = _cast(frame, self.dialect.types)
        rejects += bad + [Reject(n, reason, raw_text(n)) for n, reason in failed]
        return RawBatch(frame, sorted(rejects, key=lambda r: r.line), raw_text)
