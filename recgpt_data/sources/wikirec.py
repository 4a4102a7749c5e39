"""WikiRec: Wikipedia article histories, one JSON object a line in two files (the format this
project fixes; see docs/sources.md):

- ``*edits*.jsonl[.gz]``: ``{"user": str, "page_id": int, "timestamp": "YYYY-MM-DDTHH:MM:SSZ"}``,
  one line per (user, article) event.
- ``*articles*.jsonl[.gz]``: ``{"page_id": int, "title": str, "description": str}``.

Wikipedia page ids are the item ids (as strings); there are no ratings.
"""

from __future__ import annotations

import polars as pl

from recgpt_data.sources.base import LINE, Role, Source, Template
from recgpt_data.sources.readers import ndjson

EDIT_FIELDS = {"user": pl.String(), "page_id": pl.String(), "timestamp": pl.String()}
ARTICLE_FIELDS = {"page_id": pl.String(), "title": pl.String(), "description": pl.String()}


def edits(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        pl.col("user").alias("user_id"),
        pl.col("page_id").alias("item_id"),
        pl.col("timestamp")
        .str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_unit="us", time_zone="UTC", strict=False)
        .alias("timestamp"),
        pl.col(LINE),
    )


def articles(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(pl.col("page_id").alias("item_id"), pl.col("title"), pl.col("description"), pl.col(LINE))


SOURCE = Source(
    name="wikirec",
    roles=(
        Role("items", ("*articles*.json", "*articles*.jsonl"), ndjson(ARTICLE_FIELDS), articles, required=("item_id",)),
        Role(
            "interactions",
            ("*edits*.json", "*edits*.jsonl"),
            ndjson(EDIT_FIELDS),
            edits,
            required=("user_id", "item_id", "timestamp"),
        ),
    ),
    dataset=lambda path: "wikirec",
    rating_max=None,
    id_patterns=(("item_id", r"\d+"),),
    template=Template(
        noun="Wikipedia articles",
        fields=("Title", "Description"),
        response_fields=("Title",),
        rating_pairs=False,
    ),
    terms="Wikipedia text under CC BY-SA 4.0; edit histories from the public Wikimedia dumps.",
)
