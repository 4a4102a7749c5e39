"""Netflix Prize (2006): ``combined_data_*.txt`` (blocks: a ``MOVIE_ID:`` line, then that movie's
``CustomerID,Rating,YYYY-MM-DD`` lines; the per-movie ``training_set/mv_*.txt`` files are the same
format, one block each) and ``movie_titles.txt`` / ``.csv`` (MovieID,YearOfRelease,Title; ISO-8859-1,
``NULL`` years, unquoted commas inside titles: split on the first two commas only). Netflix's terms
forbid redistribution."""

from __future__ import annotations

import polars as pl

from recgpt_data.sources.amazon_common import extras_json
from recgpt_data.sources.base import LINE, Role, Source, Template
from recgpt_data.sources.delimited import LATIN1, Dialect, delimited, movie_blocks

RATINGS = Dialect(
    quoting=False, header=False, columns=("customer_id", "rating", "date"), types={"rating": pl.Float64()}
)
TITLES = Dialect(
    quoting=False, header=False, columns=("movie_id", "year", "title"), encoding=LATIN1, last_takes_rest=True
)


def ratings(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        pl.col("customer_id").alias("user_id"),
        pl.col("movie_id").alias("item_id"),
        pl.col("date").str.strptime(pl.Datetime("us", "UTC"), "%Y-%m-%d", strict=False).alias("timestamp"),
        "rating",
        LINE,
    )


def titles(raw: pl.DataFrame) -> pl.DataFrame:
    year = pl.when(pl.col("year") != "NULL").then(pl.col("year"))
    return raw.select(pl.col("movie_id").alias("item_id"), "title", extras_json(year=year).alias("extras"), LINE)


SOURCE = Source(
    name="netflix",
    roles=(
        Role(
            "items",
            ("movie_titles.txt", "movie_titles.csv"),
            delimited(TITLES),
            titles,
            required=("item_id", "title"),
        ),
        Role(
            "interactions",
            ("combined_data_*.txt", "mv_*.txt"),
            movie_blocks(RATINGS, "movie_id"),
            ratings,
            required=("user_id", "item_id", "timestamp", "rating"),
        ),
    ),
    dataset=lambda path: "netflix",
    rating_max=5.0,
    rating_min=1.0,
    id_patterns=(("user_id", r"\d+"), ("item_id", r"\d+")),
    template=Template(noun="movies/shows", fields=("Title", "Rating"), response_fields=("Title",)),
    redistributable=False,
    terms="Netflix Prize data (Netflix, 2006): for the Prize and research; redistribution forbidden.",
)
