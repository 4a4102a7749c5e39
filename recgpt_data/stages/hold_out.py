"""Stage ``hold_out``: the benchmark leakage guard (:mod:`recgpt_data.split`)."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from recgpt_data.split import hold_out
from recgpt_data.stage import PARTITION_USER, Context, Drops, Params, StageOutput, StageStats, count, stage


class HoldOutParams(Params):
    """No parameters: the ``held_out`` table says what to drop."""


@stage(
    "hold_out",
    params=HoldOutParams,
    reads=("interactions", "held_out"),
    writes=("interactions",),
    partition=PARTITION_USER,
    version="1",
)
def hold_out_stage(tables: Mapping[str, pl.LazyFrame], params: HoldOutParams, ctx: Context) -> StageOutput:
    """Drop every interaction a benchmark holds out (all datasets and releases), counted as ``held_out``."""
    interactions, held_out = tables["interactions"], tables["held_out"]
    stats = StageStats(rows_in={"interactions": count(interactions), "held_out": count(held_out)})
    kept, held = hold_out(interactions, held_out)
    drops = Drops()
    drops.add("interactions", held, "held_out")
    return StageOutput({"interactions": kept}, stats, drops)
