"""HotelRec (Antognini & Faltings, LREC 2020): TripAdvisor hotel reviews as JSON lines, one review a
line: ``hotel_url``, ``author``, ``date`` (``YYYY-MM-DDT00:00:00``), ``rating`` (1-5), ``title``,
``text`` and ``property_dict`` (sub-ratings, kept in ``extras``).

The dump has no separate hotel file: the hotel is its ``hotel_url``
(``Hotel_Review-g<geo>-d<id>-Reviews-<Hotel_Name>-<Location>.html``), which also carries the hotel
name (the title) and its location (the city), so the same file also fills the items table.
"""

from __future__ import annotations

import polars as pl

from recgpt_data.sources.amazon_common import extras_json
from recgpt_data.sources.base import LINE, Role, Source, Template
from recgpt_data.sources.readers import ndjson, with_raw_json

REVIEW_FIELDS = {
    "hotel_url": pl.String(),
    "author": pl.String(),
    "date": pl.String(),
    "rating": pl.Float64(),
    "title": pl.String(),
    "text": pl.String(),
    "property_dict": pl.String(),
}

HOTEL_FIELDS = {"hotel_url": pl.String()}

_URL = r"-Reviews-([^-]+)-([^/]+?)\.html$"
HOTEL_URL = r"Hotel_Review-g\d+-d\d+-Reviews-[^/]+\.html"  # the item id: TripAdvisor's page of the hotel
PATTERNS = ("HotelRec*.txt", "HotelRec*.json", "HotelRec*.jsonl", "hotelrec*.json", "hotelrec*.jsonl")


def _slug(group: int) -> pl.Expr:
    return pl.col("hotel_url").str.extract(_URL, group).str.replace_all("_", " ")


def reviews(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        pl.col("author").alias("user_id"),
        pl.col("hotel_url").alias("item_id"),
        pl.col("date")
        .str.to_datetime("%Y-%m-%dT%H:%M:%S", time_unit="us", time_zone="UTC", strict=False)
        .alias("timestamp"),
        pl.col("rating"),
        pl.col("title").alias("review_title"),
        pl.col("text").alias("review_text"),
        with_raw_json(pl.lit("{}"), property_dict=pl.col("property_dict")).replace("{}", None).alias("extras"),
        pl.col(LINE),
    )


def hotels(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        pl.col("hotel_url").alias("item_id"),
        _slug(1).alias("title"),
        _slug(2).alias("city"),
        extras_json(geo_id=pl.col("hotel_url").str.extract(r"-g(\d+)-", 1)).alias("extras"),
        pl.col(LINE),
    )


SOURCE = Source(
    name="hotelrec",
    roles=(
        Role(
            "interactions",
            PATTERNS,
            ndjson(REVIEW_FIELDS),
            reviews,
            required=("user_id", "item_id", "timestamp"),
        ),
        Role("items", PATTERNS, ndjson(HOTEL_FIELDS), hotels, required=("item_id",)),
    ),
    dataset=lambda path: "hotelrec",
    rating_max=5.0,
    rating_min=1.0,
    id_patterns=(("item_id", HOTEL_URL),),
    template=Template(
        noun="hotels",
        fields=("Title", "City", "Review", "Rating"),
        response_fields=("Title", "City"),
    ),
    terms="HotelRec, Diego Antognini and Boi Faltings (LREC 2020); research use.",
)
