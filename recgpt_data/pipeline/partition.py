"""One bucket of a partitioned stage: the unit of work an engine schedules.

A :class:`PartitionTask` is plain data (the stage, its parameters, and the input files of each table:
the bucket's own part file for tables cut into buckets, all files for the others); :func:`run_partition`
runs it anywhere the package and the output folder are reachable, writes the bucket's tables
atomically and returns the :class:`~recgpt_data.pipeline.store.PartRecord` of what it wrote. The
local and Ray engines call the same function, so their outputs are the same bytes.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import polars as pl

from recgpt_data.errors import UsageError
from recgpt_data.io.storage import Location
from recgpt_data.pipeline.store import PartRecord, write_tables
from recgpt_data.stage import PARTITION_COLUMNS, Context, Params, StageDef


@dataclass(frozen=True)
class PartitionTask:
    """Bucket ``index`` of ``count`` of stage ``definition`` run with ``fingerprint``, writing
    under ``target``."""

    definition: StageDef
    params: Params
    context: Context
    inputs: dict[str, tuple[str, ...]]
    index: int
    count: int
    target: Location
    fingerprint: str


def part_name(table: str, index: int) -> str:
    """The relative path of bucket ``index`` of ``table`` inside its stage folder."""
    return f"{table}/part-{index:05d}.parquet"


def run_partition(task: PartitionTask) -> PartRecord:
    """Run one bucket of a stage and write its tables; the function every engine calls."""
    started = time.perf_counter()
    tables = {name: pl.scan_parquet(list(files)) for name, files in task.inputs.items()}
    output = task.definition.fn(tables, task.params, task.context)
    column = PARTITION_COLUMNS[task.definition.partition]
    try:
        written = write_tables(output, task.target, lambda name: part_name(name, task.index), column)
    except UsageError as exc:
        raise UsageError(f"stage {task.definition.name} is partitioned by {task.definition.partition}: {exc}") from None
    return PartRecord(
        task.fingerprint,
        task.index,
        written,
        output.stats.to_dict(),
        time.perf_counter() - started,
        f"{socket.gethostname()}:{os.getpid()}",
    )
