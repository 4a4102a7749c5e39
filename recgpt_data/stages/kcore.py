"""Stage ``kcore``: every dataset reduced to its iterative user/item k-core (:mod:`recgpt_data.clean.filters`)."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl
from pydantic import Field

from recgpt_data.clean.filters import kcore
from recgpt_data.stage import Context, Params, StageOutput, StageStats, stage


class KcoreParams(Params):
    """Minimum interactions per user and per item of the core (5 and 5 for the P5 benchmarks)."""

    min_user: int = Field(default=5, ge=1)
    min_item: int = Field(default=5, ge=1)


@stage("kcore", params=KcoreParams, reads=("interactions",), writes=("interactions",), version="1")
def kcore_stage(tables: Mapping[str, pl.LazyFrame], params: KcoreParams, ctx: Context) -> StageOutput:
    """Reduce every dataset to its iterative user/item k-core."""
    frame = tables["interactions"].collect()
    result = kcore(frame, min_user=params.min_user, min_item=params.min_item)
    stats = StageStats(rows_in={"interactions": frame.height}, info=dict(result.info))
    return StageOutput({"interactions": result.frame}, stats, result.drops)
