"""The ``p5_benchmark`` stage run in this process as the executor runs it: its input tables as
parquet files, its prepare step's tasks one after another, then the stage function on the inputs
and the prepared tables."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import polars as pl

from recgpt_data.stage import Context, Preparation, StageOutput
from recgpt_data.stages.p5_benchmark import P5BenchmarkParams, p5_benchmark_stage, prepare_p5


def run_p5_benchmark(
    tables: Mapping[str, pl.LazyFrame],
    params: P5BenchmarkParams,
    ctx: Context,
    map_: Callable[[Callable, Sequence], Iterable] = map,
) -> StageOutput:
    """The stage's output on ``tables`` (its files written under ``ctx.out_dir``), the prepare step's
    tasks run by ``map_`` (default: one after another in this process)."""
    with tempfile.TemporaryDirectory(prefix="p5-stage-") as temporary:
        folder = Path(temporary)
        files = {}
        for name, frame in tables.items():
            files[name] = (str(folder / f"{name}.parquet"),)
            frame.collect().write_parquet(files[name][0])
        preparation = Preparation(
            buckets={name: (paths,) for name, paths in files.items()},
            bucketed=dict.fromkeys(files, False),
            scratch=folder / "prepare",
            map=map_,
        )
        prepared = prepare_p5(preparation, params, ctx)
        inputs = {name: pl.scan_parquet(list(paths)) for name, paths in {**files, **prepared.tables}.items()}
        return p5_benchmark_stage(inputs, params, ctx)
