"""A stage's work as tasks an engine schedules: one bucket of a partitioned stage, or a whole stage.

A :class:`PartitionTask` is plain data (the stage, its parameters, and the input files of each table:
the bucket's own files for tables cut into buckets, all files for the others); :func:`run_partition`
runs it anywhere the package and the output folder are reachable, writes the bucket's tables
atomically and returns the :class:`~recgpt_data.pipeline.store.PartRecord` of what it wrote. A
:class:`WholeTask` is the same for a stage that is not partitioned: :func:`run_whole` reads every
input table whole, writes the stage's tables and returns the same small record, so the driver never
holds a stage's tables. The local and Ray engines call the same functions, so their outputs are the
same bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from recgpt_data.engines import worker_name
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
        task.fingerprint, task.index, written, output.stats.to_dict(), time.perf_counter() - started, worker_name()
    )


@dataclass(frozen=True)
class WholeTask:
    """Stage ``definition`` run on whole tables (the files of each) with ``fingerprint``, writing
    its tables under ``target``."""

    definition: StageDef
    params: Params
    context: Context
    inputs: dict[str, tuple[str, ...]]
    target: Location
    fingerprint: str


def table_name(table: str) -> str:
    """The relative path of a whole stage's ``table`` inside its stage folder."""
    return f"{table}.parquet"


def run_whole(task: WholeTask, after_each: Callable[[], None] | None = None) -> PartRecord:
    """Run a stage on whole tables and write its tables (calling ``after_each`` after each one);
    its record is a bucket's (index 0)."""
    started = time.perf_counter()
    tables = {name: pl.scan_parquet(list(files)) for name, files in task.inputs.items()}
    output = task.definition.fn(tables, task.params, task.context)
    written = write_tables(output, task.target, table_name, after_each=after_each)
    return PartRecord(
        task.fingerprint, 0, written, output.stats.to_dict(), time.perf_counter() - started, worker_name()
    )
