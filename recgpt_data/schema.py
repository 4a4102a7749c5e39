"""The canonical tables every reader produces and every later stage consumes.

Two tables, the same for all sources:

- **interactions**: one row per (user, item) event as the source recorded it.
- **items**: one row per item of a dataset, with the metadata RecGPT renders.

Ids stay the source's own strings. ``rating`` is null where the source marks "no rating" (never a
sentinel number). ``src_file`` / ``src_line`` are the input ordinal: together with ``timestamp`` they
give the one chronological order used everywhere (:data:`CHRONOLOGICAL`).
"""

from __future__ import annotations

import polars as pl

TIMESTAMP = pl.Datetime("us", "UTC")

INTERACTIONS: dict[str, pl.DataType] = {
    "source": pl.String(),  # reader format, e.g. "amazon2018"
    "dataset": pl.String(),  # e.g. "amazon2018/All_Beauty", "movielens/ml-100k", "yelp"
    "user_id": pl.String(),
    "item_id": pl.String(),
    "timestamp": TIMESTAMP,  # null where the source has no time (BookCrossing, Anime)
    "src_file": pl.String(),  # file name the record came from
    "src_line": pl.Int64(),  # 1-based line (or record) number inside src_file
    "rating": pl.Float64(),  # on the source's own scale; null = no rating
    "rating_max": pl.Float64(),  # top of the source's scale (5.0, 10.0)
    "review_title": pl.String(),
    "review_text": pl.String(),
    "helpful_votes": pl.Int64(),  # for the "most helpful" keep rule; null where unknown
    "extras": pl.String(),  # JSON object of source-specific fields, or null
}

ITEMS: dict[str, pl.DataType] = {
    "source": pl.String(),
    "dataset": pl.String(),
    "item_id": pl.String(),
    "title": pl.String(),
    "brand": pl.String(),
    "author": pl.String(),
    "description": pl.String(),
    "categories": pl.List(pl.String()),  # categories, genres or tags
    "city": pl.String(),
    "extras": pl.String(),  # JSON object of source-specific fields, or null
}

TABLES: dict[str, dict[str, pl.DataType]] = {"interactions": INTERACTIONS, "items": ITEMS}

# The one chronological order: time, then input ordinal. Nulls (no time) sort first, so a source
# without timestamps keeps its file order.
CHRONOLOGICAL = ("timestamp", "src_file", "src_line")


def conform(frame: pl.DataFrame | pl.LazyFrame, table: str) -> pl.DataFrame | pl.LazyFrame:
    """Select and cast ``frame`` to the canonical column set of ``table``, adding missing columns as null."""
    schema = TABLES[table]
    present = set(frame.collect_schema().names())
    return frame.select(
        [(pl.col(name) if name in present else pl.lit(None)).cast(dtype).alias(name) for name, dtype in schema.items()]
    )


def empty(table: str) -> pl.DataFrame:
    """An empty frame with the canonical schema of ``table``."""
    return pl.DataFrame(schema=TABLES[table])
