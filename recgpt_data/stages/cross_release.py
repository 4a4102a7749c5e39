"""Stage ``cross_release``: a review two releases of one catalogue carry is counted once
(:mod:`recgpt_data.dedup.cross_release`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import polars as pl
from pydantic import Field

from recgpt_data.dedup.cross_release import drop_copies
from recgpt_data.stage import PARTITION_USER, Context, Params, StageOutput, StageStats, stage


class CrossReleaseParams(Params):
    """Which source is the older release, which sources are newer releases of the same catalogue,
    the shortest text the text rule compares, and which older rows are kept."""

    older: str = "amazon2014"
    newer: list[str] = Field(default_factory=lambda: ["amazon2018"], min_length=1)
    min_text_chars: int = Field(default=20, ge=1)
    keep_older: Literal["unmatched", "none"] = "unmatched"


@stage(
    "cross_release",
    params=CrossReleaseParams,
    reads=("interactions",),
    writes=("interactions",),
    version="1",
    partition=PARTITION_USER,
)
def cross_release_stage(tables: Mapping[str, pl.LazyFrame], params: CrossReleaseParams, ctx: Context) -> StageOutput:
    """Drop the older release's copies of newer releases' reviews (and, with ``keep_older="none"``,
    every other row of the older release), each with its reason."""
    frame = tables["interactions"].collect()
    kept, drops, by_dataset = drop_copies(frame, params.older, params.newer, params.min_text_chars, params.keep_older)
    stats = StageStats(rows_in={"interactions": frame.height}, info={"dropped_by_dataset": by_dataset})
    return StageOutput({"interactions": kept}, stats, drops)
