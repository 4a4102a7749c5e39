"""RecGPT's row filters: items without a title, users with too few interactions, and the k-core.

All counts are per dataset: a user id is a user of one dataset (``dataset``, ``user_id``), an item
of one dataset (``dataset``, ``item_id``). Filters keep row order and every column they do not know.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl
from pydantic import Field

from recgpt_data.stage import (
    PARTITION_USER,
    Context,
    Frame,
    Params,
    StageOutput,
    StageStats,
    dropped_tables,
    removed,
    stage,
)

USER = ("dataset", "user_id")
ITEM = ("dataset", "item_id")


@dataclass
class FilterResult:
    """Filtered tables, rows dropped by reason, and facts such as users dropped and rounds run."""

    interactions: pl.DataFrame | None = None
    items: pl.DataFrame | None = None
    dropped: Counter[str] = field(default_factory=Counter)
    info: dict[str, int] = field(default_factory=dict)
    removed: list[pl.DataFrame] = field(default_factory=list)  # the dropped rows, with drop_reason

    def keep(self, frame: pl.DataFrame, keep: pl.Series, reason: str) -> pl.DataFrame:
        """``frame``'s rows where ``keep`` holds; the others are counted and kept aside as ``reason``."""
        self.dropped[reason] += int((~keep).sum())
        self.removed.append(removed(frame.filter(~keep), reason))
        return frame.filter(keep)

    def record(self, stats: StageStats, table: str) -> dict[str, pl.DataFrame]:
        """Add the drop counts to a stage's ``stats``; the dropped rows of ``table``, for
        :attr:`StageOutput.dropped`."""
        for reason, n in sorted(self.dropped.items()):
            stats.drop(reason, n)
        return dropped_tables({table: self.removed})


def drop_untitled_items(items: pl.DataFrame) -> FilterResult:
    """Drop items whose title is null (RecGPT names every item of a history by its title)."""
    result = FilterResult()
    result.items = result.keep(items, items["title"].is_not_null(), "item_without_title")
    result.dropped = +result.dropped
    return result


def drop_interactions_of_untitled(
    interactions: pl.DataFrame, items: pl.DataFrame
) -> FilterResult:
    """Drop interactions whose item has no row with a title in ``items`` (dropped as untitled, or
    never in the metadata)."""
    titled = items.filter(pl.col("title").is_not_null()).select(ITEM).unique()
    result = FilterResult()
    result.interactions = result.keep(
        interactions, _member(interactions, titled, ITEM), "interaction_item_without_title"
    )
    result.dropped = +result.dropped
    return result


def filter_users(
    interactions: pl.DataFrame, *, min_interactions: int = 5
) -> FilterResult:
    """Drop users with fewer than ``min_interactions`` interactions in their dataset."""
    ok = _count_at_least(interactions, USER, min_interactions)
    result = FilterResult()
    result.interactions = result.keep(interactions, ok, "user_below_min_interactions")
    result.dropped = +result.dropped
    result.info = {"users_dropped": interactions.filter(~ok).select(USER).n_unique()}
    return result


def kcore(
    interactions: pl.DataFrame, *, min_user: int = 5, min_item: int = 5
) -> FilterResult:
    """The iterative user/item k-core: drop users with fewer than ``min_user`` and items with fewer
    than ``min_item`` interactions in turn until every remaining user and item meets its minimum."""
    result = FilterResult(interactions)
    users_before = interactions.select(USER).n_unique()
    items_before = interactions.select(ITEM).n_unique()
    frame = interactions
    rounds = 0
    while True:
        rounds += 1
        frame = result.keep(frame, _count_at_least(frame, USER, min_user), "kcore_user_below_min")
        items_ok = _count_at_least(frame, ITEM, min_item)
        if items_ok.all():
            break
        frame = result.keep(frame, items_ok, "kcore_item_below_min")
    result.interactions = frame
    result.dropped = +result.dropped
    result.info = {
        "rounds": rounds,
        "users_dropped": users_before - frame.select(USER).n_unique(),
        "items_dropped": items_before - frame.select(ITEM).n_unique(),
    }
    return result


def _count_at_least(
    frame: pl.DataFrame, key: tuple[str, ...], minimum: int
) -> pl.Series:
    """Per row: does its ``key`` group hold at least ``minimum`` rows?"""
    return frame.select((pl.len().over(list(key)) >= minimum).alias("ok")).to_series()


def _member(frame: pl.DataFrame, keys: pl.DataFrame, on: tuple[str, ...]) -> pl.Series:
    """Per row of ``frame``: is its ``on`` key among ``keys``?"""
    marked = keys.with_columns(pl.lit(True).alias("__member"))
    joined = frame.select(on).join(
        marked, on=list(on), how="left", maintain_order="left"
    )
    return joined["__member"].fill_null(False)


class FilterUsersParams(Params):
    """RecGPT's minimum history length per user and dataset."""

    min_interactions: int = Field(default=5, ge=1)


@stage(
    "filter_users",
    params=FilterUsersParams,
    reads=("interactions",),
    writes=("interactions",),
    version="1",
    partition=PARTITION_USER,
)
def filter_users_stage(
    tables: Mapping[str, Frame], params: FilterUsersParams, ctx: Context
) -> StageOutput:
    """Drop users with fewer than ``min_interactions`` interactions in their dataset."""
    frame = _eager(tables["interactions"])
    return _output(frame, filter_users(frame, min_interactions=params.min_interactions))


class KcoreParams(Params):
    """Minimum interactions per user and per item of the core (5 and 5 for the P5 benchmarks)."""

    min_user: int = Field(default=5, ge=1)
    min_item: int = Field(default=5, ge=1)


@stage(
    "kcore",
    params=KcoreParams,
    reads=("interactions",),
    writes=("interactions",),
    version="1",
)
def kcore_stage(
    tables: Mapping[str, Frame], params: KcoreParams, ctx: Context
) -> StageOutput:
    """Reduce every dataset to its iterative user/item k-core."""
    frame = _eager(tables["interactions"])
    return _output(
        frame, kcore(frame, min_user=params.min_user, min_item=params.min_item)
    )


def _eager(frame: Frame) -> pl.DataFrame:
    return frame.collect() if isinstance(frame, pl.LazyFrame) else frame


def _output(frame: pl.DataFrame, result: FilterResult) -> StageOutput:
    stats = StageStats(rows_in={"interactions": frame.height})
    dropped = result.record(stats, "interactions")
    stats.info.update(result.info)
    return StageOutput({"interactions": result.interactions}, stats, dropped=dropped)
