"""Steam, UCSD (Kang & McAuley 2018; Pathak, Gupta & McAuley 2017): Python 2 dict literal lines
(``u'...'`` strings, True/False/None), read with :mod:`recgpt_data.sources.pyliteral`.

- ``steam_games.json.gz``: one game a line (``id``, ``app_name`` / ``title``, ``developer``,
  ``publisher``, ``genres``, ``tags``, ...).
- ``steam_reviews.json.gz``: one review a line (``username``, ``product_id``, ``date`` as
  ``YYYY-MM-DD``, ``text``, ``hours``, ...); the user is ``username``, present on every review
  (the numeric ``user_id`` is present on only some and is kept in ``extras``).
- ``australian_user_reviews.json.gz``: one user a line with a ``reviews`` list; each review is
  one interaction. ``posted`` reads ``Posted November 5, 2011.``; a date posted without a year
  (``Posted July 15.``) gives a null timestamp and is kept in ``extras``.

Steam has no ratings: ``rating`` is always null. ``bundle_data.json.gz`` lists the games of store
bundles with less detail than ``steam_games`` and is not read (the driver lists it as skipped).
"""

from __future__ import annotations

import polars as pl

from recgpt_data.sources.amazon_common import extras_json
from recgpt_data.sources.base import LINE, Role, Source, Template
from recgpt_data.sources.pyliteral import pyliteral
from recgpt_data.sources.readers import exploded

GAME_FIELDS = {
    "id": pl.String(),
    "app_name": pl.String(),
    "title": pl.String(),
    "developer": pl.String(),
    "publisher": pl.String(),
    "genres": pl.List(pl.String()),
    "tags": pl.List(pl.String()),
    "release_date": pl.String(),
    "price": pl.String(),
    "early_access": pl.Boolean(),
    "sentiment": pl.String(),
}

REVIEW_FIELDS = {
    "username": pl.String(),
    "user_id": pl.String(),
    "product_id": pl.String(),
    "date": pl.String(),
    "text": pl.String(),
    "hours": pl.Float64(),
    "recommended": pl.Boolean(),
    "found_funny": pl.Int64(),
    "early_access": pl.Boolean(),
    "compensation": pl.String(),
}

USER_REVIEW_FIELDS = {
    "user_id": pl.String(),
    "reviews": pl.List(
        pl.Struct(
            {
                "item_id": pl.String(),
                "posted": pl.String(),
                "recommend": pl.Boolean(),
                "review": pl.String(),
                "helpful": pl.String(),
            }
        )
    ),
}


def games(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        pl.col("id").alias("item_id"),
        pl.coalesce("title", "app_name").alias("title"),
        pl.coalesce("developer", "publisher").alias("brand"),
        pl.concat_list(pl.col("genres").fill_null([]), pl.col("tags").fill_null([]))
        .list.unique(maintain_order=True)
        .alias("categories"),
        extras_json(
            app_name=pl.col("app_name"),
            publisher=pl.col("publisher"),
            release_date=pl.col("release_date"),
            price=pl.col("price"),
            early_access=pl.col("early_access"),
            sentiment=pl.col("sentiment"),
        ).alias("extras"),
        pl.col(LINE),
    )


def reviews(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        pl.col("username").alias("user_id"),
        pl.col("product_id").alias("item_id"),
        pl.col("date").str.to_datetime("%Y-%m-%d", time_unit="us", time_zone="UTC", strict=False).alias("timestamp"),
        pl.col("text").alias("review_text"),
        extras_json(
            steam_user_id=pl.col("user_id"),
            hours=pl.col("hours"),
            recommended=pl.col("recommended"),
            found_funny=pl.col("found_funny"),
            early_access=pl.col("early_access"),
            compensation=pl.col("compensation"),
        ).alias("extras"),
        pl.col(LINE),
    )


def user_reviews(raw: pl.DataFrame) -> pl.DataFrame:
    date = pl.col("posted").str.strip_prefix("Posted ").str.strip_suffix(".")
    timestamp = date.str.to_datetime("%B %d, %Y", time_unit="us", time_zone="UTC", strict=False)
    return raw.select(
        pl.col("user_id"),
        pl.col("item_id"),
        timestamp.alias("timestamp"),
        pl.col("review").alias("review_text"),
        pl.col("helpful").str.extract(r"^(\d+) of ").cast(pl.Int64).alias("helpful_votes"),
        extras_json(
            recommend=pl.col("recommend"),
            posted=pl.when(timestamp.is_null()).then(pl.col("posted")),
        ).alias("extras"),
        pl.col(LINE),
    )


SOURCE = Source(
    name="steam",
    roles=(
        Role("items", ("steam_games.json",), pyliteral(GAME_FIELDS), games, required=("item_id",)),
        Role(
            "interactions",
            ("steam_reviews.json",),
            pyliteral(REVIEW_FIELDS),
            reviews,
            required=("user_id", "item_id", "timestamp"),
        ),
        Role(
            "interactions",
            ("australian_user_reviews.json",),
            exploded(pyliteral(USER_REVIEW_FIELDS), "reviews", "no_reviews"),
            user_reviews,
            required=("user_id", "item_id"),
        ),
    ),
    dataset=lambda path: "steam",
    rating_max=None,
    id_patterns=(("item_id", r"\d+"),),
    template=Template(noun="video games", fields=("Title",), response_fields=("Title",), rating_pairs=False),
    terms="Steam data, Wang-Cheng Kang and Julian McAuley (ICDM 2018); Apurva Pathak, Kshitiz Gupta and "
    "Julian McAuley (RecSys 2017); research use.",
)
