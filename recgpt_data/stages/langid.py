"""Stage ``langid``: each review's language, and text in a language not allowed blanked or dropped
(:mod:`recgpt_data.clean.langid`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import polars as pl
from pydantic import Field

from recgpt_data.clean.langid import identify
from recgpt_data.errors import UsageError
from recgpt_data.stage import PARTITION_USER, Context, Drops, Params, StageOutput, StageStats, changes_by_dataset, stage

NOT_ALLOWED = "language_not_allowed"


class LangidParams(Params):
    """Which column to judge, which languages may stay, and what happens to the others.

    ``min_letters`` and ``confirm_below`` were measured on the real samples
    (benchmarks/bench_langid.py, docs/benchmarks/langid.md).
    """

    column: str = "review_text"
    allowed: list[str] = Field(default_factory=lambda: ["en"], min_length=1)
    action: Literal["blank", "drop"] = "blank"
    min_letters: int = Field(default=3, ge=0)
    confirm_below: int = Field(default=60, ge=0)
    seed: int = 0


@stage(
    "langid",
    params=LangidParams,
    reads=("interactions",),
    writes=("interactions",),
    version="3",
    partition=PARTITION_USER,
    heuristic=True,
)
def langid_stage(tables: Mapping[str, pl.LazyFrame], params: LangidParams, ctx: Context) -> StageOutput:
    """Add ``lang`` (null where not judged); blank (or drop) text in a language not allowed."""
    frame = tables["interactions"].collect()
    if params.column not in frame.columns:
        raise UsageError(f"langid: interactions have no column {params.column!r}")
    stats = StageStats(rows_in={"interactions": frame.height})
    frame, counts = identify(
        frame,
        params.column,
        allowed=params.allowed,
        min_letters=params.min_letters,
        confirm_below=params.confirm_below,
        seed=params.seed,
    )
    stats.info.update(counts)
    foreign = pl.col("lang").is_not_null() & ~pl.col("lang").is_in(params.allowed)
    stats.info["not_allowed_by_language"] = dict(frame.filter(foreign).group_by("lang").len().sort("lang").iter_rows())
    drops = Drops()
    if params.action == "drop":
        frame = drops.keep("interactions", frame, frame.select(~foreign).to_series(), NOT_ALLOWED)
    else:
        reason = f"{params.column}:{NOT_ALLOWED}"
        stats.info["by_dataset"] = changes_by_dataset(frame, {reason: foreign})
        drops.blank("interactions", frame.filter(foreign), params.column, reason, count_none=False)
        frame = frame.with_columns(pl.when(foreign).then(None).otherwise(pl.col(params.column)).alias(params.column))
    return StageOutput({"interactions": frame}, stats, drops)
