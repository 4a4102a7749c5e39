"""Stage ``filter_users``: RecGPT's minimum history per user and dataset (:mod:`recgpt_data.clean.filters`)."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl
from pydantic import Field

from recgpt_data.clean.filters import MIN_INTERACTIONS, filter_users
from recgpt_data.stage import PARTITION_USER, Context, Params, StageOutput, StageStats, stage


class FilterUsersParams(Params):
    """RecGPT's minimum history length per user and dataset."""

    min_interactions: int = Field(default=MIN_INTERACTIONS, ge=1)


@stage(
    "filter_users",
    params=FilterUsersParams,
    reads=("interactions",),
    writes=("interactions",),
    version="1",
    partition=PARTITION_USER,
)
def filter_users_stage(tables: Mapping[str, pl.LazyFrame], params: FilterUsersParams, ctx: Context) -> StageOutput:
    """Drop users with fewer than ``min_interactions`` interactions in their dataset."""
    frame = tables["interactions"].collect()
    result = filter_users(frame, min_interactions=params.min_interactions)
    stats = StageStats(rows_in={"interactions": frame.height}, info=dict(result.info))
    return StageOutput({"interactions": result.frame}, stats, result.drops)
