"""Runs a whole stage as the executor does with one local worker, in this process: its input tables
written to files, its prepare step (its tasks run here, one after another), then its function on
those files and the prepared tables, the stats put together as the executor puts them."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from recgpt_data import stages as registry
from recgpt_data.pipeline.executor import merge_info, merge_stats
from recgpt_data.stage import Context, Params, Preparation, StageOutput, StageStats


def run_whole_here(
    name: str, tables: Mapping[str, pl.DataFrame | pl.LazyFrame], params: Params, ctx: Context
) -> StageOutput:
    """Stage ``name`` on ``tables``; its output with the prepare step's stats merged in."""
    definition = registry.get(name)
    with tempfile.TemporaryDirectory(prefix=f"{name}-") as temporary:
        folder = Path(temporary)
        files = {}
        for table, frame in tables.items():
            path = folder / f"{table}.parquet"
            (frame.collect() if isinstance(frame, pl.LazyFrame) else frame).write_parquet(path)
            files[table] = (str(path),)
        shared: dict[str, tuple[str, ...]] = {}
        prepared = None
        if definition.prepare is not None:
            preparation = Preparation(
                buckets={table: (paths,) for table, paths in files.items()},
                bucketed=dict.fromkeys(files, False),
                scratch=folder / "prepare",
                map=map,
            )
            prepared = definition.prepare(preparation, params, ctx)
            shared = dict(prepared.tables)
        scans = {table: pl.scan_parquet(list(paths)) for table, paths in {**files, **shared}.items()}
        output = definition.fn(scans, params, ctx)
        output.tables = {table: frame.lazy().collect() for table, frame in output.tables.items()}
    if prepared is not None:
        output.stats = merge_stats([output.stats.to_dict(), {**StageStats().to_dict(), **prepared.stats}])
        output.stats.info = merge_info(output.stats.info, dict(prepared.info))
    return output
