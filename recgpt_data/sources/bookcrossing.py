"""Book-Crossing (Ziegler et al., WWW 2005): ``BX-Book-Ratings.csv`` ("User-ID";"ISBN";"Book-Rating",
0 = an implicit interaction: null rating), ``BX-Books.csv`` (ISBN; title; author; year; publisher;
three image URLs) and ``BX-Users.csv`` (User-ID; Location; Age). ``;``-separated, every field quoted
(a bare ``NULL`` for missing ages), ISO-8859-1, CRLF; quotes inside titles are not escaped, so fields
are split on ``";"`` only, and ``&amp;`` is kept for cleaning. No timestamps: file order.

``BX-Users.csv`` holds no interaction or item data and is skipped (listed in the ingest summary)."""

from __future__ import annotations

import polars as pl

from recgpt_data.sources.amazon_common import extras_json
from recgpt_data.sources.base import LINE, Role, Source, Template
from recgpt_data.sources.delimited import LATIN1, Dialect, delimited

BX = {"separator": ";", "quoting": False, "all_quoted": True, "encoding": LATIN1}
RATINGS = Dialect(**BX, required=("User-ID", "ISBN", "Book-Rating"), types={"Book-Rating": pl.Float64()})
BOOKS = Dialect(**BX, required=("ISBN", "Book-Title", "Book-Author"))
IMPLICIT = 0.0
MISSING = "NULL"  # a bare NULL field: no value


def ratings(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        pl.when(pl.col("User-ID") != MISSING).then(pl.col("User-ID")).alias("user_id"),
        pl.when(pl.col("ISBN") != MISSING).then(pl.col("ISBN")).alias("item_id"),
        pl.when(pl.col("Book-Rating") != IMPLICIT).then(pl.col("Book-Rating")).alias("rating"),
        LINE,
    )


def books(raw: pl.DataFrame) -> pl.DataFrame:
    optional = {
        c: pl.col(c) if c in raw.columns else pl.lit(None, pl.String)
        for c in ("Year-Of-Publication", "Publisher", "Image-URL-L")
    }
    return raw.select(
        pl.col("ISBN").alias("item_id"),
        pl.col("Book-Title").alias("title"),
        pl.col("Book-Author").alias("author"),
        extras_json(
            year=optional["Year-Of-Publication"], publisher=optional["Publisher"], image=optional["Image-URL-L"]
        ).alias("extras"),
        LINE,
    )


SOURCE = Source(
    name="bookcrossing",
    roles=(
        Role("interactions", ("BX-Book-Ratings.csv",), delimited(RATINGS), ratings, required=("user_id", "item_id")),
        Role("items", ("BX-Books.csv",), delimited(BOOKS), books, required=("item_id",)),
    ),
    dataset=lambda path: "bookcrossing",
    rating_max=10.0,
    rating_min=1.0,
    id_patterns=(("user_id", r"\d+"),),
    template=Template(noun="books", fields=("Title", "Author", "Rating"), response_fields=("Title", "Author")),
    terms="Book-Crossing dataset, Cai-Nicolas Ziegler et al. (WWW 2005); research use with citation.",
)
