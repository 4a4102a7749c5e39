"""Amazon Reviews'23, McAuley lab: ``<Category>.jsonl`` reviews and ``meta_<Category>.jsonl``
metadata, both JSON lines. Reviews point at the ``parent_asin`` (the item all variants share; the
variant ``asin`` is kept in ``extras``); ``timestamp`` is in milliseconds. For books the author is
``author.name`` where the meta line has an ``author`` object, else the ``store``."""

from __future__ import annotations

import polars as pl

from recgpt_data.sources.amazon_common import (
    AMAZON_TEMPLATES,
    AMAZON_USER,
    ASIN,
    BOOKS_TEMPLATE,
    amazon_dataset,
    extras_json,
)
from recgpt_data.sources.base import LINE, Role, Source, from_epoch
from recgpt_data.sources.readers import ndjson
from recgpt_data.sources.sniff import fields_sniff

REVIEW_FIELDS = {
    "user_id": pl.String(),
    "parent_asin": pl.String(),
    "asin": pl.String(),
    "rating": pl.Float64(),
    "title": pl.String(),
    "text": pl.String(),
    "timestamp": pl.Int64(),
    "helpful_vote": pl.Int64(),
    "verified_purchase": pl.Boolean(),
}

META_FIELDS = {
    "parent_asin": pl.String(),
    "title": pl.String(),
    "store": pl.String(),
    "author": pl.Struct({"name": pl.String()}),
    "description": pl.List(pl.String()),
    "categories": pl.List(pl.String()),
    "main_category": pl.String(),
    "price": pl.Float64(),
    "average_rating": pl.Float64(),
    "rating_number": pl.Int64(),
}


def reviews(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        pl.col("user_id"),
        pl.col("parent_asin").alias("item_id"),
        from_epoch("timestamp", "ms").alias("timestamp"),
        pl.col("rating"),
        pl.col("title").alias("review_title"),
        pl.col("text").alias("review_text"),
        pl.col("helpful_vote").alias("helpful_votes"),
        extras_json(asin=pl.col("asin"), verified_purchase=pl.col("verified_purchase")).alias("extras"),
        pl.col(LINE),
    )


def meta(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        pl.col("parent_asin").alias("item_id"),
        pl.col("title"),
        pl.col("store").alias("brand"),
        pl.col("author").struct.field("name").fill_null(pl.col("store")).alias("author"),
        pl.col("description").list.join(" ").replace("", None).alias("description"),
        pl.col("categories"),
        extras_json(
            main_category=pl.col("main_category"),
            price=pl.col("price"),
            average_rating=pl.col("average_rating"),
            rating_number=pl.col("rating_number"),
        ).alias("extras"),
        pl.col(LINE),
    )


SOURCE = Source(
    name="amazon2023",
    roles=(
        Role(
            "items",
            ("meta_*.jsonl",),
            ndjson(META_FIELDS),
            meta,
            required=("item_id",),
            sniff=fields_sniff(("parent_asin",), {"salesRank": "amazon2014", "main_cat": "amazon2018"}),
        ),
        Role(
            "interactions",
            ("*.jsonl",),
            ndjson(REVIEW_FIELDS),
            reviews,
            required=("user_id", "item_id"),
            exclude=("meta_*",),
            sniff=fields_sniff(("user_id", "parent_asin"), {"reviewerID": "amazon2014 or amazon2018"}),
        ),
    ),
    dataset=lambda path: amazon_dataset("amazon2023", path),
    rating_max=5.0,
    rating_min=1.0,
    id_patterns=(("user_id", AMAZON_USER), ("item_id", ASIN)),
    template=AMAZON_TEMPLATES,
    template_overrides=(("/(Books|Kindle_Store)$", BOOKS_TEMPLATE),),
    terms="Amazon Reviews'23, Yupeng Hou, Jiacheng Li, Zhankui He, An Yan, Xiusi Chen, Julian McAuley "
    "(arXiv 2403.03952); research use.",
)
