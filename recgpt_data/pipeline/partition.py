"""One user bucket of a partitioned stage: the unit of work an engine schedules.

A :class:`PartitionTask` is plain data (the stage, its parameters, and the input files of each table:
the bucket's own part file for tables keyed by user, all files for the others); :func:`run_partition`
runs it anywhere the package and the output folder are reachable, writes the bucket's tables
atomically and returns what it wrote. The local and Ray engines call the same function, so their
outputs are the same bytes.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from recgpt_data.errors import UsageError
from recgpt_data.io.parquet import write_parquet
from recgpt_data.pipeline.fingerprint import FileRecord, file_sha256
from recgpt_data.stage import PARTITION_COLUMNS, Context, Params, StageDef


@dataclass(frozen=True)
class PartitionTask:
    """Bucket ``index`` of ``count`` of stage ``definition``, writing under ``target``."""

    definition: StageDef
    params: Params
    context: Context
    inputs: dict[str, tuple[str, ...]]
    index: int
    count: int
    target: Path


@dataclass
class PartitionResult:
    """What one bucket wrote (paths relative to the stage folder), its stats, and which process
    on which host ran it."""

    index: int
    tables: dict[str, FileRecord] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    worker: str = ""


def part_name(table: str, index: int) -> str:
    """The relative path of bucket ``index`` of ``table`` inside its stage folder."""
    return f"{table}/part-{index:05d}.parquet"


def run_partition(task: PartitionTask) -> PartitionResult:
    """Run one bucket of a stage and write its tables; the function every engine calls."""
    started = time.perf_counter()
    tables = {name: pl.scan_parquet(list(files)) for name, files in task.inputs.items()}
    output = task.definition.fn(tables, task.params, task.context)
    stats = output.stats
    result = PartitionResult(index=task.index, worker=f"{socket.gethostname()}:{os.getpid()}")
    column = PARTITION_COLUMNS[task.definition.partition]
    for name, frame in output.to_write().items():
        data = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
        if column not in data.columns:
            raise UsageError(
                f"stage {task.definition.name} is partitioned by {task.definition.partition} but its table "
                f"{name!r} has no {column} column"
            )
        relative = part_name(name, task.index)
        path = task.target / relative
        write_parquet(data, path)
        if name in output.tables:
            stats.rows_out.setdefault(name, data.height)
        result.tables[name] = FileRecord(relative, path.stat().st_size, file_sha256(path))
    result.stats = stats.to_dict()
    result.seconds = time.perf_counter() - started
    return result
