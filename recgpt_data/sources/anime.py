"""Anime Recommendations Database (Kaggle, CooperUnion, from myanimelist.net): ``anime.csv``
(anime_id, name, genre, type, episodes, rating, members; CRLF; HTML entities in names kept here,
unescaped by cleaning) and ``rating.csv`` (user_id, anime_id, rating, where -1 means watched
without a rating: null). No timestamps: a user's history keeps file order."""

from __future__ import annotations

import polars as pl

from recgpt_data.sources.amazon_common import extras_json
from recgpt_data.sources.base import LINE, Role, Source, Template
from recgpt_data.sources.delimited import Dialect, delimited

ANIME = Dialect(required=("anime_id", "name", "genre"), types={"rating": pl.Float64(), "members": pl.Int64()})
RATINGS = Dialect(required=("user_id", "anime_id", "rating"), types={"rating": pl.Float64()})
NOT_RATED = -1.0


def ratings(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        "user_id",
        pl.col("anime_id").alias("item_id"),
        pl.when(pl.col("rating") != NOT_RATED).then(pl.col("rating")).alias("rating"),
        LINE,
    )


def anime(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        pl.col("anime_id").alias("item_id"),
        pl.col("name").alias("title"),
        pl.col("genre").str.split(",").list.eval(pl.element().str.strip_chars()).alias("categories"),
        extras_json(
            type=pl.col("type"), episodes=pl.col("episodes"), average_rating=pl.col("rating"), members=pl.col("members")
        ).alias("extras"),
        LINE,
    )


SOURCE = Source(
    name="anime",
    roles=(
        Role("items", ("anime.csv",), delimited(ANIME), anime, required=("item_id",)),
        Role("interactions", ("rating.csv",), delimited(RATINGS), ratings, required=("user_id", "item_id")),
    ),
    dataset=lambda path: "anime",
    rating_max=10.0,
    rating_min=1.0,
    id_patterns=(("user_id", r"\d+"), ("item_id", r"\d+")),
    template=Template(noun="movies/shows", fields=("Title", "Genres", "Rating"), response_fields=("Title", "Genres")),
    terms="Anime Recommendations Database (Kaggle, CooperUnion), data from myanimelist.net; CC0 on Kaggle.",
)
