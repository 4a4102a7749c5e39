"""The ``ingest`` stage's reading as tasks on the run's engine: one task per input file, and a big
file of a role read line by line (a :class:`~recgpt_data.sources.readers.LineReader`) cut into
blocks of lines, one task each.

:func:`open_file` reads a file whole, or cuts it: a compressed file is decompressed once into
copies of about ``block_bytes`` of whole lines each (zstd, level 1), each knowing the number of
its first line in the file; a plain one is cut, by its size alone, into byte ranges of
``block_bytes`` read in place, each block the lines that start in its range. :func:`read_block`
then parses one block. A range's block numbers its lines from 1 and reports how many it read;
once every block is parsed, :func:`line_shifts` adds to each block's numbers the lines of the
blocks before it and :func:`shifted` rewrites its rows and rejects with them, so rows and rejects
carry the file's own line numbers and the file's bytes are read once in all. An input file may be
an object-store URL, read as a stream and never copied to disk: a compressed object's bytes go
straight into its decoder, and each block of a plain one reads only its byte range (one ranged
read per chunk) and the end of its last line. The copies and pieces go under the task's
``folder``: the stage's scratch, or with the output in object storage a prefix of the store, so
that every task runs on any node. Every task writes its *piece* of the
file's output atomically (its rows, its rejects and, with a sample, the
rows of users left out) and returns a :class:`Piece`: the files with their rows and the accounting
of what it read. A cut stream's end (a truncated record, the warning) is a piece of its own, the
file's last. :func:`merged` makes one file's accounting of its pieces.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from recgpt_data import schema as canonical
from recgpt_data.ingest import FileSummary, read_batches
from recgpt_data.io.atomic import AtomicFile
from recgpt_data.io.parquet import parquet_writer_at
from recgpt_data.io.storage import Location, is_remote, join, location_of, open_input, put, size
from recgpt_data.io.streams import CHUNK_BYTES, LineBlocks, compression_of
from recgpt_data.sampling import REASON as NOT_SAMPLED
from recgpt_data.sampling import in_sample
from recgpt_data.sources import get_source
from recgpt_data.sources.base import FileInfo, RawBatch, ReadState, Reject, Role, Source
from recgpt_data.sources.readers import LineReader, prefetched, truncation
from recgpt_data.stage import DROP_REASON

REJECTS = "dropped_raw"
SAMPLED_OUT = "dropped_interactions"
REJECT_COLUMNS = {"file": pl.String(), "line": pl.Int64(), "raw": pl.String(), DROP_REASON: pl.String()}
SAMPLED_OUT_COLUMNS = {**canonical.TABLES["interactions"], DROP_REASON: pl.String()}
COMPRESSED_SHARE = 4  # a compressed file is cut when over block_bytes / 4: dumps inflate 3-6 times
LINE_COLUMNS = ("src_line", "line")  # the columns of a piece's tables that hold line numbers


def columns_of(table: str) -> dict[str, pl.DataType]:
    """The columns of a table a task writes: a canonical table, the rejects or the sampled-out rows."""
    return {REJECTS: REJECT_COLUMNS, SAMPLED_OUT: SAMPLED_OUT_COLUMNS}.get(table) or canonical.TABLES[table]


@dataclass(frozen=True)
class FileTask:
    """Input file ``number`` (``path``: a local path or an object's URL) read in role ``role``
    (filling ``table``) of source ``format``, as plain data for any engine: its rows go to dataset
    ``dataset`` and its pieces' files under ``folder/<table>/<dataset>/<file name>/``; a sample
    keeps ``sample`` of the users (drawn with ``seed``)."""

    number: int
    format: str
    role: int
    table: str
    path: str
    dataset: str
    folder: str
    block_bytes: int
    sample: float | None
    seed: int

    def source(self) -> tuple[Source, Role]:
        source = get_source(self.format)
        return source, source.roles[self.role]

    def piece_path(self, table: str, index: int, suffix: str = "parquet") -> Location:
        """Where piece ``index`` of this file writes ``table`` (or, suffix ``zst``, its block's copy;
        ``shifted.parquet``, the table with its lines renumbered): a local path, or a URL where
        ``folder`` is in object storage."""
        relative = f"{self.table}/{self.dataset}/{Path(self.path).name}/{table}-{index:05d}.{suffix}"
        return join(location_of(self.folder), relative)


@dataclass(frozen=True)
class Block:
    """Lines of a file to parse in one task: a copy of them at ``read``, or the lines that start in
    the byte range ``span`` of the plain file itself; ``first_line`` is the number of the first (of
    a range's lines 1: the lines before them are counted only once every block is read)."""

    file: FileTask
    index: int
    read: str
    first_line: int
    span: tuple[int, int] | None = None


@dataclass(frozen=True)
class Piece:
    """What one task wrote for piece ``index`` of file ``file``: each table's file and rows (tables
    it had no rows for left out), the accounting of the records it read and, for the byte range of
    a plain file, the lines it read."""

    file: int
    index: int
    tables: dict[str, tuple[str, int]]
    summary: FileSummary
    lines: int = 0


def splits(task: FileTask, role: Role) -> bool:
    """Whether the file is cut into blocks: its role's reader parses each line alone and the file is
    over ``block_bytes`` (compressed: over a share of it)."""
    limit = task.block_bytes // COMPRESSED_SHARE if compression_of(task.path) else task.block_bytes
    return isinstance(role.reader, LineReader) and (size(location_of(task.path)) or 0) > limit


def open_file(task: FileTask) -> tuple[list[Piece], list[Block]]:
    """A task: a file read whole (one piece), or cut into blocks for :func:`read_block` (with the
    piece of a cut stream's end, if any). A file in object storage is read as a stream, never
    copied; a plain one cut is not read here at all: its blocks are byte ranges of ``block_bytes``
    by its size, each read by its own task."""
    _, role = task.source()
    location = location_of(task.path)
    if not splits(task, role):
        state = ReadState()
        return [write_piece(task, 0, role.reader(location, state), state)], []
    if compression_of(task.path) is None:
        total, step = size(location) or 0, task.block_bytes
        return [], [
            Block(task, k, task.path, 1, (at, min(at + step, total))) for k, at in enumerate(range(0, total, step))
        ]
    blocks = LineBlocks(location, min(CHUNK_BYTES, task.block_bytes))
    copies = list(_copies(task, blocks))
    state = ReadState()
    end = write_piece(task, len(copies), _cut_end(location, blocks, state), state)
    return [end], copies


class ZstdCopy(AtomicFile):
    """A block of a compressed file's decompressed lines for ``target``, written zstd under a
    temporary name and renamed into place whole (see :class:`~recgpt_data.io.atomic.AtomicFile`);
    for a ``target`` in object storage written in ``TMPDIR`` and put there in one PUT."""

    def __init__(self, target: Location):
        self.target = target
        super().__init__(Path(tempfile.mkdtemp(prefix="recgpt-block-")) / "block.zst" if is_remote(target) else target)
        try:
            self.stream = pa.CompressedOutputStream(pa.OSFile(str(self.tmp), "wb"), "zstd")
        except BaseException:  # nothing written yet: the temporary file and folder go
            self.tmp.unlink(missing_ok=True)
            if is_remote(target):
                shutil.rmtree(self.path.parent, ignore_errors=True)
            raise
        self.size = 0

    def write(self, data: bytes) -> None:
        self.stream.write(data)
        self.size += len(data)

    def finish(self) -> None:
        self.stream.close()

    def close(self) -> None:
        super().close()
        if is_remote(self.target):
            try:
                put(self.path, self.target)
            finally:  # a failed PUT leaves no copy in TMPDIR either
                shutil.rmtree(self.path.parent, ignore_errors=True)

    def abort(self) -> None:
        super().abort()
        if is_remote(self.target):
            shutil.rmtree(self.path.parent, ignore_errors=True)


def _copies(task: FileTask, blocks: LineBlocks) -> Iterator[Block]:
    """The decompressed ``blocks`` of ``task``'s file gathered into zstd copies of about
    ``block_bytes`` each (decompressing the next block while this one is compressed), every copy
    written atomically (a failed one removed)."""
    copy, first, index = None, 0, 0
    try:
        for line, block, _ in prefetched(iter(blocks)):
            if copy is None:
                copy, first = ZstdCopy(task.piece_path("blocks", index, "zst")), line
            copy.write(block)
            copy.write(b"\n")
            if copy.size >= task.block_bytes:
                copy.close()
                yield Block(task, index, str(copy.target), first)
                copy, index = None, index + 1
        if copy is not None:
            copy.close()
            yield Block(task, index, str(copy.target), first)
    except BaseException:
        if copy is not None:
            copy.abort()
        raise


def _cut_end(path: Location, blocks: LineBlocks, state: ReadState) -> Iterator[RawBatch]:
    """The end of a cut file: its truncated record and warning, if any (its complete lines are the
    blocks' records)."""
    yield from truncation(path, blocks, state)
    state.records -= blocks.lines


def read_block(block: Block) -> Piece:
    """A task: parse one block of a file's lines into its piece: its copy, or the lines of its byte
    range of the plain file (in object storage, ranged reads of that range and the end of its last
    line alone), numbered from 1, with their count. The task only reads, so a retry of it reads the
    same lines (the stage deletes the copies once every block is parsed)."""
    _, role = block.file.source()
    assert isinstance(role.reader, LineReader)
    lines = LineBlocks(location_of(block.read), first_line=block.first_line, span=block.span)
    state = ReadState()

    def batches() -> Iterator[RawBatch]:
        yield from role.reader.blocks(lines)
        state.records = lines.lines

    piece = write_piece(block.file, block.index, prefetched(batches()), state)
    return replace(piece, lines=lines.lines)


@dataclass(frozen=True)
class Shift:
    """Piece ``piece`` of ``file`` (a byte range's, its lines numbered from 1), whose line numbers
    ``lines`` more make them the file's: the lines of the blocks before it."""

    file: FileTask
    piece: Piece
    lines: int


def line_shifts(pieces: Mapping[int, Sequence[Piece]], blocks: Sequence[Block]) -> list[Shift]:
    """The pieces of the byte ranges of ``blocks`` (``pieces`` by file number, each file's in order)
    whose line numbers must move: each by the lines that the ranges before it read. Only pieces
    with a table of line numbers and lines before them are given."""
    ranged = {b.file.number: b.file for b in blocks if b.span is not None}
    shifts = []
    for number, file in sorted(ranged.items()):
        before = 0
        for piece in pieces[number]:
            if before and any(_line_column(t) for t in piece.tables):
                shifts.append(Shift(file, piece, before))
            before += piece.lines
    return shifts


def _line_column(table: str) -> str | None:
    """The column of ``table`` (as a task writes it) that holds line numbers, if any."""
    return next((c for c in LINE_COLUMNS if c in columns_of(table)), None)


def shifted(shift: Shift) -> Piece:
    """A task: the piece with its line numbers moved by ``shift.lines``, each table that holds them
    rewritten (atomically, beside the first, which a retry reads again) row group by row group, as
    the block's task would have written it had it known its first line; other tables kept as they
    are. A table is read in one read (from a store, one GET rather than one a column chunk)."""
    tables = dict(shift.piece.tables)
    for table, (path, rows) in shift.piece.tables.items():
        column = _line_column(table)
        if column is None:
            continue
        target = shift.file.piece_path(table, shift.piece.index, "shifted.parquet")
        with open_input(location_of(path)) as handle:
            parquet = pq.ParquetFile(pa.BufferReader(handle.read()))
        with parquet_writer_at(target, columns_of(table)) as writer:
            for group in range(parquet.num_row_groups):
                frame = pl.from_arrow(parquet.read_row_group(group))
                writer.write(frame.with_columns(pl.col(column) + shift.lines))
        tables[table] = (str(target), rows)
    return replace(shift.piece, tables=tables)


def write_piece(task: FileTask, index: int, batches: Iterator[RawBatch], state: ReadState) -> Piece:
    """Write ``batches`` of ``task``'s file as piece ``index``: its rows, its rejects (as the stage
    keeps them: ``drop_reason`` is ``<format>:<reason>``) and, with a sample, the interactions of the
    users left out, each file written atomically."""
    source, role = task.source()
    info = FileInfo(source=source.name, dataset=task.dataset, file=Path(task.path).name)
    tables = [role.table, REJECTS] + ([SAMPLED_OUT] if task.sample is not None and role.table == "interactions" else [])
    with ExitStack() as stack:
        paths = {t: task.piece_path(t, index) for t in tables}
        writers = {t: stack.enter_context(parquet_writer_at(paths[t], columns_of(t))) for t in tables}

        def write_rows(rows: pl.DataFrame) -> None:
            if SAMPLED_OUT not in writers:
                writers[role.table].write(rows)
                return
            keep = in_sample(task.sample, task.seed)
            writers[role.table].write(rows.filter(keep))
            writers[SAMPLED_OUT].write(rows.filter(~keep).with_columns(pl.lit(NOT_SAMPLED).alias(DROP_REASON)))

        def write_rejects(rejects: list[Reject]) -> None:
            writers[REJECTS].write(
                pl.DataFrame(
                    {
                        "file": [task.path] * len(rejects),
                        "line": [r.line for r in rejects],
                        "raw": [r.raw for r in rejects],
                        DROP_REASON: [f"{source.name}:{r.reason}" for r in rejects],
                    },
                    schema=REJECT_COLUMNS,
                )
            )

        summary = read_batches(source, role, info, batches, state, write_rows, write_rejects, task.path)
    written = {t: (str(paths[t]), w.rows) for t, w in writers.items() if w.rows}
    return Piece(task.number, index, written, summary)


def merged(pieces: Sequence[Piece]) -> FileSummary:
    """One file's accounting from its pieces' (in order): counts added up, a cut reported."""
    first = pieces[0].summary
    rejected: Counter[str] = Counter()
    for piece in pieces:
        rejected.update(piece.summary.rejected)
    return FileSummary(
        file=first.file,
        table=first.table,
        dataset=first.dataset,
        read=sum(p.summary.read for p in pieces),
        kept=sum(p.summary.kept for p in pieces),
        rejected=dict(sorted(rejected.items())),
        truncated=any(p.summary.truncated for p in pieces),
        warning=next((p.summary.warning for p in pieces if p.summary.warning), None),
    )
