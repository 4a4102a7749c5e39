"""Cutting a table into buckets by the stable hash of one column (``user_id`` or ``dataset``) in one
streaming pass, so that each bucket of a partitioned stage reads only its own rows (not the whole
table once per bucket).

Rows keep their order inside each bucket; memory stays bounded by the buffered rows, however large
the table. The buckets are written next to the table they come from and reused until that table is
written again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from recgpt_data.hashing import bucket
from recgpt_data.io.parquet import COMPRESSION, write_text
from recgpt_data.io.storage import Location, join, local_folder, remove_tree, size

BATCH_ROWS = 65_536
BUFFERED_ROWS = 2_000_000  # across all buckets, before the fullest ones are flushed
DONE = "_SUCCESS.json"


def has_column(files: Sequence[Location], column: str) -> bool:
    """Whether a table (its parquet files) has ``column`` to bucket by."""
    return column in pq.read_schema(files[0]).names


def bucket_of(batch: pa.RecordBatch, column: str, count: int) -> np.ndarray:
    """Each row's bucket by ``column`` (rows where it is null go to bucket 0)."""
    keys = pl.Series(column, batch.column(column))
    return bucket(keys, count).fill_null(0).to_numpy()


def table_schema(files: Sequence[Location]) -> pa.Schema:
    """The schema of the first file that holds rows (an empty bucket may carry null-typed columns)."""
    for path in files:
        if pq.read_metadata(path).num_rows:
            return pq.read_schema(path)
    return pq.read_schema(files[0])


def split_by(files: Sequence[Location], column: str, count: int, target: Location) -> list[Location]:
    """``files`` cut into ``count`` buckets by ``column`` under ``target`` (reused if already there;
    on an object store the parts go up first and the record that says they are done last)."""
    names = [f"part-{index:05d}.parquet" for index in range(count)]
    if all(size(join(target, name)) is not None for name in [DONE, *names]):
        return [join(target, name) for name in names]
    remove_tree(target)
    with local_folder(target, last=DONE) as folder:
        cut(files, column, folder, names)
    return [join(target, name) for name in names]


def cut(files: Sequence[Location], column: str, folder: Path, names: Sequence[str]) -> None:
    """Write the buckets of ``files`` by ``column`` as ``names`` in the local ``folder``, then its record."""
    count = len(names)
    parts = [folder / name for name in names]
    schema = table_schema(files)
    writers = [pq.ParquetWriter(p.with_name(p.name + ".tmp"), schema, compression=COMPRESSION) for p in parts]
    buffers: list[list[pa.Table]] = [[] for _ in range(count)]
    sizes = [0] * count
    per_bucket = max(1_024, BUFFERED_ROWS // count)

    def flush(index: int) -> None:
        if buffers[index]:
            writers[index].write_table(pa.concat_tables(buffers[index]))
            buffers[index], sizes[index] = [], 0

    try:
        for path in files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
                table = pa.Table.from_batches([batch]).cast(schema)
                buckets = bucket_of(batch, column, count)
                for index in np.unique(buckets):
                    rows = table.filter(pa.array(buckets == index))
                    buffers[index].append(rows)
                    sizes[index] += rows.num_rows
                    if sizes[index] >= per_bucket:
                        flush(index)
        for index in range(count):
            flush(index)
    finally:
        for writer in writers:
            writer.close()
    for part in parts:
        os.replace(part.with_name(part.name + ".tmp"), part)
    write_text(
        json.dumps({"sources": [str(f) for f in files], "column": column, "buckets": count}) + "\n", folder / DONE
    )
