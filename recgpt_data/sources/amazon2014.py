"""Amazon product data (2014), McAuley lab: ``reviews_<Category>[_5].json.gz`` reviews as JSON lines
and ``meta_<Category>.json.gz`` metadata as one Python dict literal per line (not JSON; read with
:mod:`recgpt_data.sources.pyliteral`, never ``eval``). ``helpful`` is ``[helpful, total]`` votes;
``categories`` is a list of category paths, flattened here."""

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
from recgpt_data.sources.pyliteral import pyliteral
from recgpt_data.sources.readers import ndjson, with_raw_json
from recgpt_data.sources.sniff import fields_sniff

REVIEW_FIELDS = {
    "reviewerID": pl.String(),
    "asin": pl.String(),
    "overall": pl.Float64(),
    "unixReviewTime": pl.Int64(),
    "summary": pl.String(),
    "reviewText": pl.String(),
    "helpful": pl.List(pl.Int64()),
}

META_FIELDS = {
    "asin": pl.String(),
    "title": pl.String(),
    "brand": pl.String(),
    "description": pl.String(),
    "categories": pl.List(pl.List(pl.String())),
    "price": pl.Float64(),
    "salesRank": pl.String(),
}


def reviews(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        pl.col("reviewerID").alias("user_id"),
        pl.col("asin").alias("item_id"),
        from_epoch("unixReviewTime", "s").alias("timestamp"),
        pl.col("overall").alias("rating"),
        pl.col("summary").alias("review_title"),
        pl.col("reviewText").alias("review_text"),
        pl.col("helpful").list.get(0, null_on_oob=True).alias("helpful_votes"),
        extras_json(helpful_total=pl.col("helpful").list.get(1, null_on_oob=True)).alias("extras"),
        pl.col(LINE),
    )


def meta(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        pl.col("asin").alias("item_id"),
        pl.col("title"),
        pl.col("brand"),
        pl.col("description"),
        pl.col("categories").list.eval(pl.element().explode().drop_nulls()).list.unique(maintain_order=True),
        with_raw_json(extras_json(price=pl.col("price")), salesRank=pl.col("salesRank")).alias("extras"),
        pl.col(LINE),
    )


SOURCE = Source(
    name="amazon2014",
    roles=(
        Role(
            "items",
            ("meta_*.json",),
            pyliteral(META_FIELDS),
            meta,
            required=("item_id",),
            sniff=fields_sniff(("asin",), {"main_cat": "amazon2018", "parent_asin": "amazon2023"}),
        ),
        Role(
            "interactions",
            ("reviews_*.json", "*_5.json"),
            ndjson(REVIEW_FIELDS),
            reviews,
            required=("user_id", "item_id"),
            sniff=fields_sniff(
                ("reviewerID", "asin"), {"verified": "amazon2018", "vote": "amazon2018", "parent_asin": "amazon2023"}
            ),
        ),
    ),
    dataset=lambda path: amazon_dataset("amazon2014", path),
    rating_max=5.0,
    rating_min=1.0,
    id_patterns=(("user_id", AMAZON_USER), ("item_id", ASIN)),
    template=AMAZON_TEMPLATES,
    template_overrides=(("/(Books|Kindle_Store)$", BOOKS_TEMPLATE),),
    terms="Amazon product data (2014), Ruining He and Julian McAuley (WWW 2016); Julian McAuley et al. "
    "(SIGIR 2015); research use.",
)
