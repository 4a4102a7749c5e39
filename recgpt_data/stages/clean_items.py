"""Stage ``clean_items``: item text repaired, untitled items dropped
(:mod:`recgpt_data.clean.text`, :mod:`recgpt_data.clean.filters`)."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl
from pydantic import Field

from recgpt_data.clean.filters import drop_untitled_items
from recgpt_data.clean.text import clean_frame
from recgpt_data.stage import PARTITION_DATASET, Context, Drops, Params, StageOutput, StageStats, stage


class CleanItemsParams(Params):
    """Which item columns to clean, the length cap, and whether untitled items are dropped."""

    columns: list[str] = Field(default_factory=lambda: ["title", "brand", "author", "description", "city"])
    max_chars: int = Field(default=100_000, ge=1)
    drop_untitled: bool = True


@stage(
    "clean_items",
    params=CleanItemsParams,
    reads=("items",),
    writes=("items",),
    version="1",
    partition=PARTITION_DATASET,
)
def clean_items_stage(tables: Mapping[str, pl.LazyFrame], params: CleanItemsParams, ctx: Context) -> StageOutput:
    """Repair item text; drop items left without a title."""
    frame = tables["items"].collect()
    stats = StageStats(rows_in={"items": frame.height})
    frame, counts = clean_frame(frame, params.columns, max_chars=params.max_chars)
    drops = Drops()
    for reason, n in sorted(counts.items()):
        drops.change(f"items.{reason}", n)
    if params.drop_untitled:
        result = drop_untitled_items(frame)
        frame = result.frame
        drops.update(result.drops)
    return StageOutput({"items": frame}, stats, drops)
