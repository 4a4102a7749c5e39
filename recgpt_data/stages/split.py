"""Stage ``split``: every user to pre-training or the instruction pool (:mod:`recgpt_data.split`)."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl
from pydantic import Field

from recgpt_data.errors import UsageError
from recgpt_data.p5 import HELD_OUT
from recgpt_data.split import assign_split, leaked
from recgpt_data.stage import PARTITION_USER, Context, Params, StageOutput, StageStats, stage


class SplitParams(Params):
    """The share of users that go to the instruction pool."""

    instruct_fraction: float = Field(0.005, ge=0.0, le=1.0)


@stage(
    "split",
    params=SplitParams,
    reads=("interactions",),
    optional_reads=("held_out",),
    writes=("interactions",),
    partition=PARTITION_USER,
    version="3",
)
def split_stage(tables: Mapping[str, pl.LazyFrame], params: SplitParams, ctx: Context) -> StageOutput:
    """Split users pretrain / instruct; refuse input that still holds a held-out interaction."""
    interactions = tables["interactions"].collect(engine="streaming")
    stats = StageStats(rows_in={"interactions": interactions.height})
    held_out = tables.get("held_out", pl.LazyFrame(schema=HELD_OUT))
    if interactions.height and (found := leaked(interactions.lazy(), held_out)).height:
        raise UsageError(
            f"split: {found.height} held-out (user_id, item_id) pairs are in its input; "
            "run `hold_out` before `filter_users` and `split`"
        )
    out = assign_split(interactions, params.instruct_fraction, ctx.seed)
    users = (
        out.group_by("split")
        .agg(pl.struct("dataset", "user_id").n_unique().alias("users"), pl.len().alias("rows"))
        .sort("split")
    )
    stats.info["users"] = {row["split"]: row["users"] for row in users.iter_rows(named=True)}
    stats.info["interactions"] = {row["split"]: row["rows"] for row in users.iter_rows(named=True)}
    return StageOutput({"interactions": out}, stats)
