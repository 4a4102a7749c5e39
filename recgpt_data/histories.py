"""Per-user histories: a user's events in one dataset, in CHRONOLOGICAL order, joined with item
metadata and written as RecGPT item lines.

Users are partitioned into buckets by a stable hash of the user id (:func:`recgpt_data.hashing.bucket`),
so that one bucket's events, not the whole input, are in memory at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl

from recgpt_data.hashing import bucket
from recgpt_data.schema import CHRONOLOGICAL
from recgpt_data.serialize import item_line_expr
from recgpt_data.sources import get_source
from recgpt_data.sources.base import Template

USER = ("dataset", "user_id")
EVENT_COLUMNS = (
    "source",
    "dataset",
    "user_id",
    "item_id",
    *CHRONOLOGICAL,
    "rating",
    "rating_max",
    "review_text",
)
ITEM_COLUMNS = ("dataset", "item_id", "title", "brand", "author", "description", "categories", "city")
# The full order of a history's events: CHRONOLOGICAL, then the item id for total determinism.
HISTORY_ORDER = (*USER, *CHRONOLOGICAL, "item_id")
LINE_COLUMNS = ("source", "dataset", "user_id", "item_id", "noun", "line")


def template_for(source: str, dataset: str) -> Template:
    """The RecGPT template of ``dataset`` as its source declares it."""
    return get_source(source).template_for(dataset)


def user_buckets(interactions: pl.LazyFrame, buckets: int) -> pl.DataFrame:
    """Each (dataset, user_id) of ``interactions`` with its bucket in ``[0, buckets)``, by user id."""
    users = interactions.lazy().select(*USER).unique().sort(list(USER)).collect(engine="streaming")
    return users.with_columns(bucket(users["user_id"], buckets).alias("bucket"))


def unique_items(items: pl.LazyFrame, keys: pl.DataFrame | None = None) -> pl.LazyFrame:
    """The item columns histories render, one row per (dataset, item_id): the first one read;
    only the items of ``keys`` (a (dataset, item_id) frame) when given."""
    present = set(items.lazy().collect_schema().names())
    columns = [pl.col(c) if c in present else pl.lit(None).alias(c) for c in ITEM_COLUMNS]
    selected = items.lazy().select(columns)
    if keys is not None:
        selected = selected.join(keys.lazy(), on=["dataset", "item_id"], how="semi", maintain_order="left")
    return selected.unique(["dataset", "item_id"], keep="first", maintain_order=True)


@dataclass
class Events:
    """One bucket's events joined with their items, in history order, and how many had no item row."""

    frame: pl.DataFrame
    without_item: int


def bucket_events(interactions: pl.LazyFrame, items: pl.LazyFrame, users: pl.DataFrame) -> Events:
    """The events of ``users`` (a (dataset, user_id) frame), joined with ``items``, in history
    order. Only the items these events name are read into memory."""
    present = set(interactions.lazy().collect_schema().names())
    columns = [pl.col(c) if c in present else pl.lit(None).alias(c) for c in EVENT_COLUMNS]
    events = (
        interactions.lazy()
        .select(columns)
        .join(users.lazy().select(*USER), on=list(USER), how="semi")
        .collect(engine="streaming")
    )
    named = events.select("dataset", "item_id").unique()
    wanted = unique_items(items, named).with_columns(pl.lit(True).alias("__item")).collect(engine="streaming")
    events = events.join(wanted, on=["dataset", "item_id"], how="left").sort(list(HISTORY_ORDER), maintain_order=True)
    return Events(events.drop("__item"), events["__item"].null_count())


def iter_bucket_events(interactions: pl.LazyFrame, items: pl.LazyFrame, buckets: int) -> Iterator[Events]:
    """:func:`bucket_events` of each non-empty user bucket in turn, so one bucket is in memory at a time."""
    users = user_buckets(interactions, buckets)
    for index in range(buckets):
        chosen = users.filter(pl.col("bucket") == index)
        if chosen.height:
            yield bucket_events(interactions, items, chosen)


def history_lines(events: pl.DataFrame) -> pl.DataFrame:
    """Each event's item line (``line``) under its dataset's template, plus the template's noun;
    keeps the event order. Columns: source, dataset, user_id, item_id, noun, line."""
    parts = []
    indexed = events.with_row_index("__row")
    for (source, dataset), group in indexed.group_by(["source", "dataset"], maintain_order=True):
        template = template_for(source, dataset)
        parts.append(
            group.select(
                "__row",
                "source",
                "dataset",
                "user_id",
                "item_id",
                pl.lit(template.noun).alias("noun"),
                item_line_expr(template.fields, group.columns).alias("line"),
            )
        )
    if not parts:
        return pl.DataFrame(schema={c: pl.String() for c in LINE_COLUMNS})
    return pl.concat(parts).sort("__row").drop("__row")
