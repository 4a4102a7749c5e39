"""Food.com recipes and reviews (Majumder et al., EMNLP 2019): ``RAW_interactions.csv`` (user_id,
recipe_id, date, rating, review; rating 0 means no rating: null; dates ``YYYY-MM-DD`` or the
re-exported ``YYYY/M/D``; reviews are quoted and may hold newlines) and ``RAW_recipes.csv`` (name,
id, minutes, contributor_id, submitted, tags, nutrition, n_steps, steps, description, ingredients,
n_ingredients; ``tags`` is a Python list literal)."""

from __future__ import annotations

import polars as pl

from recgpt_data.sources.amazon_common import extras_json
from recgpt_data.sources.base import LINE, Role, Source, Template
from recgpt_data.sources.delimited import Dialect, delimited

INTERACTIONS = Dialect(required=("user_id", "recipe_id", "date", "rating", "review"), types={"rating": pl.Float64()})
RECIPES = Dialect(required=("name", "id", "tags", "description"))
NOT_RATED = 0.0
LIST_ELEMENT = r"'[^']*'|\"[^\"]*\""


def parse_date(column: str) -> pl.Expr:
    """``YYYY-MM-DD`` or ``YYYY/M/D`` as midnight UTC; anything else null."""
    return (
        pl.col(column)
        .str.replace_all("/", "-", literal=True)
        .str.strptime(pl.Datetime("us", "UTC"), "%Y-%m-%d", strict=False)
    )


def interactions(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        "user_id",
        pl.col("recipe_id").alias("item_id"),
        parse_date("date").alias("timestamp"),
        pl.when(pl.col("rating") != NOT_RATED).then(pl.col("rating")).alias("rating"),
        pl.col("review").alias("review_text"),
        LINE,
    )


def recipes(raw: pl.DataFrame) -> pl.DataFrame:
    optional = [
        c
        for c in ("minutes", "contributor_id", "submitted", "nutrition", "n_steps", "ingredients", "n_ingredients")
        if c in raw.columns
    ]
    return raw.select(
        pl.col("id").alias("item_id"),
        pl.col("name").alias("title"),
        "description",
        pl.col("tags")
        .str.extract_all(LIST_ELEMENT)
        .list.eval(pl.element().str.slice(1, pl.element().str.len_chars() - 2))
        .alias("categories"),
        extras_json(**{c: pl.col(c) for c in optional}).alias("extras"),
        LINE,
    )


SOURCE = Source(
    name="foodcom",
    roles=(
        Role(
            "interactions",
            ("RAW_interactions.csv", "interactions_*.csv"),
            delimited(INTERACTIONS),
            interactions,
            required=("user_id", "item_id", "timestamp"),
        ),
        Role("items", ("RAW_recipes.csv",), delimited(RECIPES), recipes, required=("item_id",)),
    ),
    dataset=lambda path: "foodcom",
    rating_max=5.0,
    rating_min=1.0,
    id_patterns=(("user_id", r"\d+"), ("item_id", r"\d+")),
    template=Template(noun="food recipes", fields=("Title", "Review", "Rating"), response_fields=("Title",)),
    terms="Food.com Recipes and Interactions, Bodhisattwa Majumder et al. (EMNLP 2019); research use with citation.",
)
