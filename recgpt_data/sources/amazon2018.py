"""Amazon Review Data (2018), McAuley lab: ``<Category>.json`` / ``<Category>_5.json`` reviews and
``meta_<Category>.json`` metadata, both JSON lines. Meta titles can hold HTML (cleaned later);
``style``, ``vote`` and ``image`` are optional; ``vote`` is a string such as ``"1,234"``; ``style`` (an
object such as ``{"Size:": " 7.0 oz"}``) goes into ``extras`` as a nested object."""

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
from recgpt_data.sources.readers import ndjson, with_raw_json
from recgpt_data.sources.sniff import fields_sniff

REVIEW_FIELDS = {
    "reviewerID": pl.String(),
    "asin": pl.String(),
    "overall": pl.Float64(),
    "unixReviewTime": pl.Int64(),
    "summary": pl.String(),
    "reviewText": pl.String(),
    "vote": pl.String(),
    "verified": pl.Boolean(),
    "style": pl.String(),
}

META_FIELDS = {
    "asin": pl.String(),
    "title": pl.String(),
    "brand": pl.String(),
    "description": pl.List(pl.String()),
    "category": pl.List(pl.String()),
    "main_cat": pl.String(),
    "price": pl.String(),
}


def reviews(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        pl.col("reviewerID").alias("user_id"),
        pl.col("asin").alias("item_id"),
        from_epoch("unixReviewTime", "s").alias("timestamp"),
        pl.col("overall").alias("rating"),
        pl.col("summary").alias("review_title"),
        pl.col("reviewText").alias("review_text"),
        pl.col("vote").str.replace_all(",", "").cast(pl.Int64, strict=False).alias("helpful_votes"),
        with_raw_json(extras_json(verified=pl.col("verified")), style=pl.col("style")).alias("extras"),
        pl.col(LINE),
    )


def meta(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        pl.col("asin").alias("item_id"),
        pl.col("title"),
        pl.col("brand"),
        pl.col("description").list.join(" ").alias("description"),
        pl.col("category").alias("categories"),
        extras_json(main_cat=pl.col("main_cat"), price=pl.col("price")).alias("extras"),
        pl.col(LINE),
    )


SOURCE = Source(
    name="amazon2018",
    roles=(
        Role(
            "items",
            ("meta_*.json", "meta_*.jsonl"),
            ndjson(META_FIELDS),
            meta,
            required=("item_id",),
            sniff=fields_sniff(("asin",), {"salesRank": "amazon2014", "parent_asin": "amazon2023"}),
        ),
        Role(
            "interactions",
            ("*.json", "*.jsonl"),
            ndjson(REVIEW_FIELDS),
            reviews,
            required=("user_id", "item_id"),
            exclude=("meta_*",),
            sniff=fields_sniff(("reviewerID", "asin"), {"helpful": "amazon2014", "parent_asin": "amazon2023"}),
        ),
    ),
    dataset=lambda path: amazon_dataset("amazon2018", path),
    rating_max=5.0,
    rating_min=1.0,
    id_patterns=(("user_id", AMAZON_USER), ("item_id", ASIN)),
    template=AMAZON_TEMPLATES,
    template_overrides=(("/(Books|Kindle_Store)$", BOOKS_TEMPLATE),),
    terms="Amazon Review Data (2018), Jianmo Ni, Jiacheng Li, Julian McAuley (EMNLP 2019); research use.",
)
