"""Atomic, deterministic parquet writing: a temporary name, then a rename once the file is whole."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from recgpt_data.io.atomic import AtomicFile
from recgpt_data.io.storage import Location, is_remote, local_file, write_bytes

COMPRESSION = "zstd"
ROW_GROUP_ROWS = 65536  # the most rows a row group of a written table holds


def arrow_schema(schema: dict[str, pl.DataType]) -> pa.Schema:
    """The Arrow schema (large strings) that polars writes for a canonical polars schema."""
    return pl.DataFrame(schema=schema).to_arrow(compat_level=pl.CompatLevel.oldest()).schema


def to_arrow(frame: pl.DataFrame) -> pa.Table:
    return frame.to_arrow(compat_level=pl.CompatLevel.oldest())


class AtomicParquetWriter(AtomicFile):
    """Append frames as row groups to ``path``; nothing is visible at ``path`` until :meth:`close`
    (see :class:`~recgpt_data.io.atomic.AtomicFile`), so a failed write never puts a partial file in place."""

    def __init__(self, path: Path, schema: dict[str, pl.DataType]):
        super().__init__(path)
        self.schema = arrow_schema(schema)
        self.writer = pq.ParquetWriter(self.tmp, self.schema, compression=COMPRESSION)
        self.rows = 0

    def write(self, frame: pl.DataFrame) -> None:
        if frame.height:
            self.writer.write_table(to_arrow(frame).cast(self.schema))
            self.rows += frame.height

    def finish(self) -> None:
        self.writer.close()


class RowGroupWriter(AtomicParquetWriter):
    """Rows appended frame by frame to ``path``, written as row groups of at most :data:`ROW_GROUP_ROWS`
    rows and (unless one row is larger) ``max_bytes`` bytes of the string column ``sized``, cut in row
    order as :func:`write_parquet` cuts a whole table by rows: the file is the same bytes whatever
    frames the rows came in, and the writer holds at most one row group of them."""

    def __init__(self, path: Path, schema: dict[str, pl.DataType], sized: str, max_bytes: int):
        super().__init__(path, schema)
        self.sized, self.max_bytes = sized, max_bytes
        self.pending: list[pl.DataFrame] = []
        self.group_rows, self.group_bytes = 0, 0

    def write(self, frame: pl.DataFrame) -> None:
        start = 0
        for index, length in enumerate(frame[self.sized].str.len_bytes().to_list()):
            if self.group_rows and (self.group_rows >= ROW_GROUP_ROWS or self.group_bytes + length > self.max_bytes):
                self.pending.append(frame.slice(start, index - start))
                self.flush()
                start = index
            self.group_rows, self.group_bytes = self.group_rows + 1, self.group_bytes + length
        self.pending.append(frame.slice(start))

    def flush(self) -> None:
        """Write the pending rows as one row group, in one contiguous chunk (as a whole table's slice
        is), so that its pages fall where :func:`write_parquet` puts them."""
        if self.group_rows:
            super().write(pl.concat(self.pending).rechunk())
        self.pending, self.group_rows, self.group_bytes = [], 0, 0

    def close(self) -> None:
        self.flush()
        super().close()


@contextmanager
def parquet_writer_at(location: Location, schema: dict[str, pl.DataType]) -> Iterator[AtomicParquetWriter]:
    """An :class:`AtomicParquetWriter` for ``location``: the path itself, or for an object-store URL
    a local file put there in one PUT once it is closed whole (a failed write puts nothing)."""
    with local_file(location) as path, AtomicParquetWriter(path, schema) as writer:
        yield writer


def write_parquet(frame: pl.DataFrame, location: Location, row_group_size: int = ROW_GROUP_ROWS) -> None:
    """Write ``frame`` to ``location`` atomically: a local path (written under a temporary name and
    renamed), or an object-store URL (one PUT of the whole file)."""
    with local_file(location) as path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(to_arrow(frame), tmp, compression=COMPRESSION, row_group_size=row_group_size)
        os.replace(tmp, path)


def write_scratch(frame: pl.DataFrame, location: Location) -> None:
    """Write a file that only later tasks of the same stage read (a local path, or an object-store
    URL where they run on other nodes): lz4, the cheapest to write and read back (a failed task
    fails the stage, whose prepare step starts its folder afresh)."""
    with local_file(location) as path:
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(path, compression="lz4")


def write_text(text: str, path: Location) -> None:
    """Write ``text`` to ``path`` (a local path or an object-store URL) whole (see
    :func:`recgpt_data.io.storage.write_bytes`)."""
    write_bytes(text.encode("utf-8"), path if is_remote(path) else Path(path))
