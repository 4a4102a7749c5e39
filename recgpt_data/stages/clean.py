"""Stage ``clean``: review text repaired, interactions with untitled items dropped
(:mod:`recgpt_data.clean.text`, :mod:`recgpt_data.clean.filters`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import polars as pl
from pydantic import Field

from recgpt_data.clean.filters import ITEM, drop_interactions_of_untitled
from recgpt_data.clean.text import clean_frame
from recgpt_data.stage import PARTITION_USER, Context, Drops, Params, StageOutput, StageStats, stage


class CleanParams(Params):
    """Which review columns to clean, the length cap, optional scrubbing, and the title rule."""

    columns: list[str] = Field(default_factory=lambda: ["review_title", "review_text"])
    max_chars: int = Field(default=100_000, ge=1)
    scrub: list[Literal["email", "phone", "url"]] = Field(default_factory=list)
    scrub_columns: list[str] = Field(default_factory=lambda: ["review_text"])
    drop_untitled: bool = True


@stage(
    "clean",
    params=CleanParams,
    reads=("interactions", "items"),
    writes=("interactions",),
    version="1",
    partition=PARTITION_USER,
)
def clean_stage(tables: Mapping[str, pl.LazyFrame], params: CleanParams, ctx: Context) -> StageOutput:
    """Repair review text; drop interactions whose item has no title (run ``clean_items`` first)."""
    frame = tables["interactions"].collect()
    stats = StageStats(rows_in={"interactions": frame.height})
    scrubbed = [c for c in params.columns if c in params.scrub_columns]
    plain = [c for c in params.columns if c not in params.scrub_columns]
    frame, counts = clean_frame(frame, plain, max_chars=params.max_chars)
    frame, scrub_counts = clean_frame(frame, scrubbed, max_chars=params.max_chars, scrub=params.scrub)
    drops = Drops()
    for reason, n in sorted((counts + scrub_counts).items()):
        drops.change(f"interactions.{reason}", n)
    if params.drop_untitled:
        named = frame.lazy().select(ITEM).unique()
        items = tables["items"].select(*ITEM, "title").join(named, on=list(ITEM), how="semi")
        result = drop_interactions_of_untitled(frame, items.collect())  # only the items this bucket names
        frame = result.frame
        drops.update(result.drops)
    return StageOutput({"interactions": frame}, stats, drops)
