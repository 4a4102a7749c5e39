"""Cutting a table into buckets by the stable hash of one column (``user_id`` or ``dataset``), so
that each bucket of a partitioned stage reads only its own rows (not the whole table once per bucket).

The cut runs as tasks on the run's engine: each task streams a fixed run of row groups of one input
file (:data:`ROW_GROUPS_PER_TASK`) and writes its piece of every bucket it has rows for. Bucket
``i`` is then the list of its pieces in task order (file order, then row-group order), so its rows
are in the table's order without a merge pass, and the task plan depends only on the files' footers.
The first task writes a piece of every bucket, empty or not, so that every bucket has a file with the
table's schema. Memory per task stays bounded: a bucket's rows are written once it holds its share of
:data:`BUFFERED_ROWS`, and whenever the rows held across all buckets pass :data:`BUFFERED_BYTES`
the fullest buckets are written until half that is left, so wide rows (review texts) and narrow
ones (ratings) are held alike, whatever the size of the input's row groups. The cut is written next to the
table it comes from, its record (``_SUCCESS.json``, listing every bucket's pieces) last, and reused
until that table is written again; on an object store each piece goes up in one PUT when it is whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from recgpt_data.hashing import bucket
from recgpt_data.io.parquet import COMPRESSION
from recgpt_data.io.storage import Location, files, join, local_file, read_bytes, remove_tree, write_bytes
from recgpt_data.stage import Mapper

BATCH_ROWS = 65_536
BUFFERED_ROWS = 2_000_000  # a task's rows across all buckets, each bucket flushed at its share
BUFFERED_BYTES = 32 << 20  # a task's rows' bytes across all buckets, before the fullest are flushed
ROW_GROUPS_PER_TASK = 16  # of one file: a task's share of the cut
DONE = "_SUCCESS.json"


def has_column(paths: Sequence[Location], column: str) -> bool:
    """Whether a table (its parquet files) has ``column`` to bucket by."""
    return column in pq.read_schema(paths[0]).names


def bucket_of(batch: pa.RecordBatch, column: str, count: int) -> np.ndarray:
    """Each row's bucket by ``column`` (rows where it is null go to bucket 0)."""
    keys = pl.Series(column, batch.column(column))
    return bucket(keys, count).fill_null(0).to_numpy()


def table_schema(paths: Sequence[Location]) -> pa.Schema:
    """The schema of the first file that holds rows (an empty bucket may carry null-typed columns)."""
    for path in paths:
        if pq.read_metadata(path).num_rows:
            return pq.read_schema(path)
    return pq.read_schema(paths[0])


@dataclass(frozen=True)
class CutTask:
    """Piece ``piece`` of a cut: row groups ``row_groups`` of ``path`` cut into ``count`` buckets by
    ``column``, written under ``target`` with ``schema`` (every bucket's piece where ``every_bucket``)."""

    path: Location
    row_groups: tuple[int, ...]
    piece: int
    column: str
    count: int
    target: Location
    schema: pa.Schema
    every_bucket: bool


def piece_name(index: int, piece: int) -> str:
    """The relative path of bucket ``index``'s piece ``piece`` inside a cut."""
    return f"part-{index:05d}-{piece:05d}.parquet"


def cut_tasks(paths: Sequence[Location], column: str, count: int, target: Location) -> list[CutTask]:
    """The tasks that cut the files ``paths``: runs of :data:`ROW_GROUPS_PER_TASK` row groups of one
    file each, read off the footers (one task over no rows where the table has none)."""
    schema = table_schema(paths)
    runs: list[tuple[Location, tuple[int, ...]]] = []
    for path in paths:
        groups = pq.read_metadata(path).num_row_groups
        runs += [
            (path, tuple(range(start, min(start + ROW_GROUPS_PER_TASK, groups))))
            for start in range(0, groups, ROW_GROUPS_PER_TASK)
        ]
    runs = runs or [(paths[0], ())]
    return [
        CutTask(path, groups, piece, column, count, target, schema, piece == 0)
        for piece, (path, groups) in enumerate(runs)
    ]


def cut_piece(task: CutTask) -> tuple[int, list[int]]:
    """Write ``task``'s piece of each bucket it has rows for (of every bucket where it must); its
    piece number and the buckets it wrote."""
    writers: dict[int, pq.ParquetWriter] = {}
    local_paths: dict[int, Path] = {}
    buffers: dict[int, list[pa.Table]] = {}
    sizes: dict[int, int] = {}
    held: dict[int, int] = {}  # bytes buffered per bucket
    total = 0  # bytes buffered across the buckets: the sum of ``held``, kept as rows come and go
    per_bucket = max(1_024, BUFFERED_ROWS // task.count)

    def tmp(index: int) -> Path:
        return local_paths[index].with_name(local_paths[index].name + ".tmp")

    with ExitStack() as pieces:

        def flush(index: int) -> None:
            nonlocal total
            if index not in writers:
                local_paths[index] = pieces.enter_context(local_file(join(task.target, piece_name(index, task.piece))))
                local_paths[index].parent.mkdir(parents=True, exist_ok=True)
                writers[index] = pq.ParquetWriter(tmp(index), task.schema, compression=COMPRESSION)
            if buffers.get(index):
                writers[index].write_table(pa.concat_tables(buffers[index]))
            total -= held.get(index, 0)
            buffers[index], sizes[index], held[index] = [], 0, 0

        try:
            if task.row_groups:
                batches = pq.ParquetFile(task.path).iter_batches(
                    batch_size=BATCH_ROWS, row_groups=list(task.row_groups)
                )
                for batch in batches:
                    table = pa.Table.from_batches([batch]).cast(task.schema)
                    buckets = bucket_of(batch, task.column, task.count)
                    for index in np.unique(buckets).tolist():
                        rows = table.filter(pa.array(buckets == index))
                        buffers.setdefault(index, []).append(rows)
                        sizes[index] = sizes.get(index, 0) + rows.num_rows
                        held[index] = held.get(index, 0) + rows.nbytes
                        total += rows.nbytes
                        if sizes[index] >= per_bucket:
                            flush(index)
                    if total > BUFFERED_BYTES:
                        for index in sorted(held, key=lambda i: (-held[i], i)):
                            flush(index)
                            if total <= BUFFERED_BYTES // 2:
                                break
            for index in range(task.count) if task.every_bucket else sorted(buffers):
                flush(index)
        except BaseException:
            for writer in writers.values():
                writer.close()
            for index in writers:
                tmp(index).unlink(missing_ok=True)
            raise
        for writer in writers.values():
            writer.close()
        for index in writers:
            os.replace(tmp(index), local_paths[index])
    return task.piece, sorted(writers)


def finished_cut(target: Path) -> list[tuple[Path, ...]] | None:
    """A cut's buckets (each its pieces in order) if its record is there and lists them (a cut of
    an earlier layout, one file a bucket, does not) and every piece is there too."""
    data = read_bytes(join(target, DONE))
    try:
        record = json.loads(data) if data is not None else None
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("parts"), list):
        return None
    present = files(target)
    if not all(name in present for names in record["parts"] for name in names):
        return None
    return [tuple(join(target, name) for name in names) for names in record["parts"]]


def split_by(
    paths: Sequence[Location], column: str, count: int, target: Location, mapper: Mapper = map
) -> list[tuple[Location, ...]]:
    """The files ``paths`` cut into ``count`` buckets by ``column`` under ``target`` (reused if
    already there), its tasks run by ``mapper`` (an engine's ``map``); each bucket's pieces, in order."""
    found = finished_cut(target)
    if found is not None and len(found) == count:
        return found
    remove_tree(target)
    tasks = cut_tasks(paths, column, count, target)
    pieces: list[list[int]] = [[] for _ in range(count)]
    for piece, written in mapper(cut_piece, tasks):
        for index in written:
            pieces[index].append(piece)
    names = [[piece_name(index, piece) for piece in sorted(written)] for index, written in enumerate(pieces)]
    record = {"sources": [str(f) for f in paths], "column": column, "buckets": count, "parts": names}
    write_bytes((json.dumps(record) + "\n").encode("utf-8"), join(target, DONE))
    return [tuple(join(target, name) for name in bucket_names) for bucket_names in names]
