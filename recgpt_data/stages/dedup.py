"""Stage ``dedup``: exact and near-duplicate removal in four scopes (:mod:`recgpt_data.dedup.scopes`,
whose :class:`~recgpt_data.dedup.scopes.DedupParams` are this stage's parameters), in user buckets:
the prepare step (:mod:`recgpt_data.dedup.prepare`) does the work that spans buckets as tasks (on
any node: with the output in object storage they pass their files through the store) and each
bucket applies its decisions."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from recgpt_data.dedup.lsh import optimal_banding
from recgpt_data.dedup.prepare import prepare_dedup
from recgpt_data.dedup.scopes import DedupParams, apply_marks
from recgpt_data.stage import PARTITION_USER, Context, StageOutput, StageStats, stage


@stage(
    "dedup",
    params=DedupParams,
    reads=("interactions", "items"),
    writes=("interactions", "items"),
    partition=PARTITION_USER,
    version="5",
    heuristic=True,
    prepare=prepare_dedup,
    prepare_anywhere=True,
)
def dedup_stage(tables: Mapping[str, pl.LazyFrame], params: DedupParams, ctx: Context) -> StageOutput:
    """One user bucket's interactions with the prepare step's decisions applied."""
    index = ctx.partition[0] if ctx.partition is not None else 0
    frame = tables["interactions"].collect().with_row_index("_bucket_row")
    marks = tables["dedup_marks"].filter(pl.col("_bucket") == index).drop("_bucket").collect()
    remap = tables["dedup_remap"].collect() if "dedup_remap" in tables else None
    stats = StageStats(rows_in={"interactions": frame.height})
    banding = optimal_banding(
        params.threshold, params.num_perm, params.false_positive_weight, params.false_negative_weight
    )
    done = apply_marks(frame, marks, remap, params)
    stats.info.update({"note": banding.describe(), "by_dataset": done.by_dataset})
    return StageOutput({"interactions": done.interactions}, stats, done.drops)
