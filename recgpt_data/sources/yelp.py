"""Yelp Open Dataset: ``yelp_academic_dataset_review.json`` and ``yelp_academic_dataset_business.json``,
JSON lines. The review ``date`` (``YYYY-MM-DD HH:MM:SS``, no zone) is taken as UTC; the business name
is the item title, its ``categories`` string (``"A, B"``) becomes a list. The other files of the dump
(user, checkin, tip) are not read."""

from __future__ import annotations

import polars as pl

from recgpt_data.sources.amazon_common import extras_json
from recgpt_data.sources.base import LINE, Role, Source, Template
from recgpt_data.sources.readers import ndjson

YELP_ID = r"[A-Za-z0-9_-]{22}"  # Yelp's ids: 22 URL-safe base64 characters

REVIEW_FIELDS = {
    "review_id": pl.String(),
    "user_id": pl.String(),
    "business_id": pl.String(),
    "stars": pl.Float64(),
    "useful": pl.Int64(),
    "funny": pl.Int64(),
    "cool": pl.Int64(),
    "text": pl.String(),
    "date": pl.String(),
}

BUSINESS_FIELDS = {
    "business_id": pl.String(),
    "name": pl.String(),
    "city": pl.String(),
    "state": pl.String(),
    "stars": pl.Float64(),
    "review_count": pl.Int64(),
    "categories": pl.String(),
}


def reviews(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        pl.col("user_id"),
        pl.col("business_id").alias("item_id"),
        pl.col("date")
        .str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us", time_zone="UTC", strict=False)
        .alias("timestamp"),
        pl.col("stars").alias("rating"),
        pl.col("text").alias("review_text"),
        pl.col("useful").alias("helpful_votes"),
        extras_json(review_id=pl.col("review_id"), funny=pl.col("funny"), cool=pl.col("cool")).alias("extras"),
        pl.col(LINE),
    )


def businesses(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        pl.col("business_id").alias("item_id"),
        pl.col("name").alias("title"),
        pl.col("city"),
        pl.col("categories").str.split(", ").alias("categories"),
        extras_json(state=pl.col("state"), stars=pl.col("stars"), review_count=pl.col("review_count")).alias("extras"),
        pl.col(LINE),
    )


SOURCE = Source(
    name="yelp",
    roles=(
        Role(
            "items", ("*business*.json", "*business*.jsonl"), ndjson(BUSINESS_FIELDS), businesses, required=("item_id",)
        ),
        Role(
            "interactions",
            ("*review*.json", "*review*.jsonl"),
            ndjson(REVIEW_FIELDS),
            reviews,
            required=("user_id", "item_id", "timestamp"),
        ),
    ),
    dataset=lambda path: "yelp",
    rating_max=5.0,
    rating_min=1.0,
    id_patterns=(("user_id", YELP_ID), ("item_id", YELP_ID)),
    template=Template(
        noun="businesses",
        fields=("Title", "City", "Review", "Rating"),
        response_fields=("Title", "City"),
    ),
    redistributable=False,
    terms="Yelp Open Dataset, under the Yelp Dataset Terms of Use: academic and non-commercial research "
    "only; the data may not be redistributed.",
)
