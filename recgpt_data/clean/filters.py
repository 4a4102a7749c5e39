"""RecGPT's row filters: items without a title, users with too few interactions, and the k-core
(the library of the ``clean``, ``clean_items``, ``filter_users`` and ``kcore`` stages).

All counts are per dataset: a user id is a user of one dataset (``dataset``, ``user_id``), an item
of one dataset (``dataset``, ``item_id``). Filters keep row order and every column they do not know.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from recgpt_data.stage import Drops

USER = ("dataset", "user_id")
ITEM = ("dataset", "item_id")
MIN_INTERACTIONS = 5  # RecGPT's minimum history per user and dataset


@dataclass
class Filtered:
    """A filter's kept rows, what it dropped (by reason, with the rows), and facts such as users
    dropped and rounds run."""

    frame: pl.DataFrame
    drops: Drops
    info: dict[str, int] = field(default_factory=dict)


def drop_untitled_items(items: pl.DataFrame) -> Filtered:
    """Drop items whose title is null (RecGPT names every item of a history by its title)."""
    drops = Drops()
    return Filtered(drops.keep("items", items, items["title"].is_not_null(), "item_without_title"), drops)


def drop_interactions_of_untitled(interactions: pl.DataFrame, items: pl.DataFrame) -> Filtered:
    """Drop interactions whose item has no row with a title in ``items`` (dropped as untitled, or
    never in the metadata)."""
    titled = items.filter(pl.col("title").is_not_null()).select(ITEM).unique()
    drops = Drops()
    kept = drops.keep(
        "interactions", interactions, _member(interactions, titled, ITEM), "interaction_item_without_title"
    )
    return Filtered(kept, drops)


def filter_users(interactions: pl.DataFrame, *, min_interactions: int = MIN_INTERACTIONS) -> Filtered:
    """Drop users with fewer than ``min_interactions`` interactions in their dataset."""
    ok = _count_at_least(interactions, USER, min_interactions)
    drops = Drops()
    kept = drops.keep("interactions", interactions, ok, "user_below_min_interactions")
    return Filtered(kept, drops, {"users_dropped": interactions.filter(~ok).select(USER).n_unique()})


def kcore(interactions: pl.DataFrame, *, min_user: int = 5, min_item: int = 5) -> Filtered:
    """The iterative user/item k-core: drop users with fewer than ``min_user`` and items with fewer
    than ``min_item`` interactions in turn until every remaining user and item meets its minimum."""
    drops = Drops()
    users_before = interactions.select(USER).n_unique()
    items_before = interactions.select(ITEM).n_unique()
    frame = interactions
    rounds = 0
    while True:
        rounds += 1
        frame = drops.keep("interactions", frame, _count_at_least(frame, USER, min_user), "kcore_user_below_min")
        items_ok = _count_at_least(frame, ITEM, min_item)
        if items_ok.all():
            break
        frame = drops.keep("interactions", frame, items_ok, "kcore_item_below_min")
    info = {
        "rounds": rounds,
        "users_dropped": users_before - frame.select(USER).n_unique(),
        "items_dropped": items_before - frame.select(ITEM).n_unique(),
    }
    return Filtered(frame, drops, info)


def _count_at_least(frame: pl.DataFrame, key: tuple[str, ...], minimum: int) -> pl.Series:
    """Per row: does its ``key`` group hold at least ``minimum`` rows?"""
    return frame.select((pl.len().over(list(key)) >= minimum).alias("ok")).to_series()


def _member(frame: pl.DataFrame, keys: pl.DataFrame, on: tuple[str, ...]) -> pl.Series:
    """Per row of ``frame``: is its ``on`` key among ``keys``?"""
    marked = keys.with_columns(pl.lit(True).alias("__member"))
    joined = frame.select(on).join(marked, on=list(on), how="left", maintain_order="left")
    return joined["__member"].fill_null(False)
