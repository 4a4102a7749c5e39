"""The cross-release rule: a review that two releases of one catalogue both carry is counted once.

Amazon's 2014 and 2018 releases share reviewer ids and ASINs, and 2018, crawled from the same site
four years later, carries 2014's reviews again, often under a category of another name (2014 ``Beauty`` is split into 2018
``All_Beauty``, ``Luxury_Beauty``, ...). A row of the older release is a copy when a row of a newer
release has the same user and either the same item and time, or the same review text (compared
lower-cased with white space collapsed, and only when it is long enough to say something of its
own); the older copy is dropped, whatever datasets the two rows sit in. ``keep_older`` decides the
older rows no newer row copies: ``unmatched`` keeps them (reviews the newer release lost), ``none``
drops them too (the older release then serves only what ran before this stage, such as the P5
benchmarks built from its 5-core files).

The ``cross_release`` stage is partitioned by user: every row of one user id, in every dataset and release, lands in
the same bucket, so the rule needs nothing outside its bucket and scales with the runner's buckets.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from recgpt_data.stage import Drops

SAME_ITEM_TIME = "cross_release_same_item_time"
SAME_TEXT = "cross_release_same_text"
OLDER_NOT_KEPT = "older_release_not_kept"
REASON = "__cross_release"


def normalised_text(column: str = "review_text") -> pl.Expr:
    """Review text as the text rule compares it: lower-cased, runs of white space as one space, stripped."""
    return pl.col(column).str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


def copy_reasons(
    interactions: pl.DataFrame, older: str, newer: list[str], min_text_chars: int, keep_older: str
) -> pl.Series:
    """Per row of ``interactions``: why it goes (a copy of a newer release's row, or an older row
    not kept), or null where it stays. Rows of sources other than ``older`` always stay."""
    frame = interactions.select("source", "user_id", "item_id", "timestamp", normalised_text().alias("text"))
    later = frame.filter(pl.col("source").is_in(newer))
    item_time = later.select("user_id", "item_id", "timestamp").unique().with_columns(pl.lit(True).alias("item_time"))
    texts = (
        later.filter(pl.col("text").str.len_chars() >= min_text_chars)
        .select("user_id", "text")
        .unique()
        .with_columns(pl.lit(True).alias("same_text"))
    )
    marked = frame.join(item_time, on=["user_id", "item_id", "timestamp"], how="left", maintain_order="left").join(
        texts, on=["user_id", "text"], how="left", maintain_order="left"
    )
    is_older = pl.col("source") == older
    fallback = pl.lit(OLDER_NOT_KEPT if keep_older == "none" else None, dtype=pl.String)
    reason = (
        pl.when(~is_older)
        .then(pl.lit(None, dtype=pl.String))
        .when(pl.col("item_time").is_not_null())
        .then(pl.lit(SAME_ITEM_TIME))
        .when(pl.col("same_text").is_not_null())
        .then(pl.lit(SAME_TEXT))
        .otherwise(fallback)
    )
    return marked.select(reason.alias(REASON)).to_series()


def drop_copies(
    interactions: pl.DataFrame, older: str, newer: list[str], min_text_chars: int, keep_older: str
) -> tuple[pl.DataFrame, Drops, dict[str, dict[str, Any]]]:
    """``interactions`` without the rows :func:`copy_reasons` sends away; those rows by reason; and
    how many went from each dataset, by reason."""
    marked = interactions.with_columns(copy_reasons(interactions, older, newer, min_text_chars, keep_older))
    drops = Drops()
    for reason in (SAME_ITEM_TIME, SAME_TEXT, OLDER_NOT_KEPT):
        rows = marked.filter(pl.col(REASON) == reason).drop(REASON)
        if rows.height:
            drops.add("interactions", rows, reason)
    gone = marked.filter(pl.col(REASON).is_not_null())
    by_dataset = gone.group_by("dataset", REASON).agg(pl.len()).sort("dataset", REASON)
    dropped_by_dataset: dict[str, dict[str, int]] = {}
    for dataset, reason, n in by_dataset.iter_rows():
        dropped_by_dataset.setdefault(dataset, {})[reason] = n
    return marked.filter(pl.col(REASON).is_null()).drop(REASON), drops, dropped_by_dataset
