"""Stage ``instruct_pairs``: rating and next-item pairs from the instruction-pool users
(:mod:`recgpt_data.instruct.pairs`, whose :class:`~recgpt_data.instruct.pairs.InstructPairsParams`
are this stage's parameters)."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from recgpt_data.errors import UsageError
from recgpt_data.instruct.pairs import ALL_USERS, InstructPairsParams, build_pairs
from recgpt_data.instruct.templates import TASKS
from recgpt_data.split import drop_held_out
from recgpt_data.stage import Context, Drops, StageOutput, StageStats, count, stage


@stage(
    "instruct_pairs",
    params=InstructPairsParams,
    reads=("interactions", "items"),
    optional_reads=("held_out",),
    writes=("instruct",),
    settings=("tokenizer",),
    version="2",
)
def instruct_pairs_stage(tables: Mapping[str, pl.LazyFrame], params: InstructPairsParams, ctx: Context) -> StageOutput:
    """Build rating and next-item pairs from the instruction-pool users, fitted to ``max_tokens``
    tokens of the spec's tokenizer; never a held-out interaction."""
    interactions = tables["interactions"]
    stats = StageStats(rows_in={"interactions": count(interactions)})
    if params.pool != ALL_USERS:
        if "split" not in interactions.collect_schema().names():
            raise UsageError(
                'instruct_pairs needs the `split` column: run the `split` stage first (or set pool = "all")'
            )
        interactions = interactions.filter(pl.col("split") == params.pool)
        stats.info["pool_interactions"] = count(interactions)
    drops = Drops()
    if "held_out" in tables:
        before = count(interactions)
        interactions = drop_held_out(interactions, tables["held_out"])
        drops.count("held_out", before - count(interactions))
    pairs = build_pairs(interactions, tables["items"], params, ctx.seed, ctx.tokenizer)
    drops.update(pairs.drops)
    instruct = pairs.instruct
    stats.info.update(pairs.info)
    stats.rows_out["instruct"] = instruct.height
    stats.info["by_task"] = {task: int((instruct["task"] == task).sum()) for task in TASKS}
    return StageOutput({"instruct": instruct}, stats, drops)
