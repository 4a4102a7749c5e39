"""The ``clean_items`` stage's work as tasks on the run's engine: each task cleans a chunk of rows
of the items table (:func:`clean_items`) and writes its kept and dropped rows into the stage's
scratch folder.

Every rule of the stage reads one row at a time (text repair, the untitled-item drop), so a chunk
is cleaned exactly as it would be inside the whole table; the chunks, joined in row order, are
the rows one process cleaning the whole table writes, in the same order. A task reads the items'
files and writes into its folder, local paths or the store's URLs alike, so it runs on any node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from recgpt_data.clean.filters import drop_untitled_items
from recgpt_data.clean.text import clean_frame
from recgpt_data.io.parquet import write_parquet
from recgpt_data.io.storage import Location, join, location_of
from recgpt_data.stage import DROPPED, Drops

CHUNK_ROWS = 50_000  # item rows of one task


def clean_items(
    items: pl.DataFrame, columns: Sequence[str], *, max_chars: int, drop_untitled: bool
) -> tuple[pl.DataFrame, Drops]:
    """``items`` with their text repaired (values changed counted as ``items.<column>:<reason>``)
    and, with ``drop_untitled``, the items left without a title dropped."""
    frame, counts = clean_frame(items, columns, max_chars=max_chars)
    drops = Drops()
    for reason, n in sorted(counts.items()):
        drops.change(f"items.{reason}", n)
    if drop_untitled:
        result = drop_untitled_items(frame)
        frame = result.frame
        drops.update(result.drops)
    return frame, drops


@dataclass(frozen=True)
class ChunkJob:
    """Chunk ``number``: ``rows`` rows of the items table (``files``) from row ``offset``, cleaned
    with the stage's parameters, written under ``scratch`` (a local path or a URL of the store)."""

    number: int
    files: tuple[str, ...]
    offset: int
    rows: int
    columns: tuple[str, ...]
    max_chars: int
    drop_untitled: bool
    scratch: str

    def file(self, table: str) -> Location:
        return join(location_of(self.scratch), f"{table}-{self.number:05d}.parquet")


@dataclass(frozen=True)
class ChunkDone:
    """What a chunk wrote (table -> its file) and counted: rows read and kept, values changed and
    rows dropped, by reason."""

    number: int
    files: dict[str, str]
    rows_in: int
    rows_out: int
    changed: dict[str, int]
    dropped: dict[str, int]


def plan_chunks(rows: int, chunk_rows: int) -> list[tuple[int, int]]:
    """``(offset, rows)`` of each chunk of a table of ``rows`` rows (one empty chunk for an empty
    table, so that the stage still writes its tables)."""
    return [(offset, min(chunk_rows, rows - offset)) for offset in range(0, rows, chunk_rows)] or [(0, 0)]


def clean_chunk(job: ChunkJob) -> ChunkDone:
    """Clean one chunk of rows and write its kept rows (``items``) and dropped rows (``dropped_items``)."""
    frame = pl.scan_parquet(list(job.files)).slice(job.offset, job.rows).collect()
    cleaned, drops = clean_items(frame, job.columns, max_chars=job.max_chars, drop_untitled=job.drop_untitled)
    written = {"items": cleaned, **{f"{DROPPED}{name}": rows for name, rows in drops.tables().items()}}
    files = {}
    for table, rows in written.items():
        write_parquet(rows.lazy().collect(), job.file(table))
        files[table] = str(job.file(table))
    return ChunkDone(job.number, files, frame.height, cleaned.height, dict(drops.changed), dict(drops.dropped))
