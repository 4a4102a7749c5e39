"""Stage ``dedup``: exact and near-duplicate removal in four scopes (:mod:`recgpt_data.dedup.scopes`,
whose :class:`~recgpt_data.dedup.scopes.DedupParams` are this stage's parameters)."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from recgpt_data.dedup.lsh import optimal_banding
from recgpt_data.dedup.scopes import DedupParams, dedup
from recgpt_data.stage import PARTITION_DATASET, Context, StageOutput, StageStats, count, stage


@stage(
    "dedup",
    params=DedupParams,
    reads=("interactions", "items"),
    writes=("interactions", "items"),
    partition=PARTITION_DATASET,
    version="3",
    heuristic=True,
)
def dedup_stage(tables: Mapping[str, pl.LazyFrame], params: DedupParams, ctx: Context) -> StageOutput:
    """Exact and near-duplicate removal over interactions and items, one dataset at a time."""
    interactions, items = tables["interactions"], tables["items"]
    stats = StageStats(rows_in={"interactions": count(interactions), "items": count(items)})
    banding = optimal_banding(
        params.threshold, params.num_perm, params.false_positive_weight, params.false_negative_weight
    )
    done = dedup(interactions, items, params)
    stats.info.update({"note": banding.describe(), **done.counters, "by_dataset": done.by_dataset})
    return StageOutput({"interactions": done.interactions, "items": done.items}, stats, done.drops)
