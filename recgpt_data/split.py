"""The benchmark leakage guard and the user-level split (the library of the ``hold_out`` and
``split`` stages).

Every interaction whose (user_id, item_id) a benchmark holds out (its validation and test items) is
removed, whatever dataset or release it comes from; this runs before ``filter_users`` so that
RecGPT's minimum history holds in what remains. Every user then goes to pre-training or to the
instruction pool by a seeded stable hash of the user id (the same reviewer id goes the same way in
every dataset and release, so no user is in both).
"""

from __future__ import annotations

import polars as pl

from recgpt_data.hashing import unit_interval

PRETRAIN = "pretrain"
INSTRUCT = "instruct"
PAIR = ("user_id", "item_id")
HELD = "__held_out"  # marks the interactions a held-out pair names, while hold_out cuts them


def held_out_pairs(held_out: pl.LazyFrame) -> pl.LazyFrame:
    """The distinct (user_id, item_id) pairs of a held-out table."""
    return held_out.select(*PAIR).unique(maintain_order=True)


def drop_held_out(interactions: pl.LazyFrame, held_out: pl.LazyFrame) -> pl.LazyFrame:
    """``interactions`` without any whose (user_id, item_id) is held out, from any dataset."""
    return interactions.join(held_out_pairs(held_out), on=list(PAIR), how="anti")


def hold_out(interactions: pl.LazyFrame, held_out: pl.LazyFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``interactions`` split into those no held-out pair names and those one does, in input order."""
    marked = held_out_pairs(held_out).with_columns(pl.lit(True).alias(HELD))
    flagged = interactions.join(marked, on=list(PAIR), how="left", maintain_order="left").collect(engine="streaming")
    held = flagged[HELD].is_not_null()
    return flagged.filter(~held).drop(HELD), flagged.filter(held).drop(HELD)


def assign_split(interactions: pl.DataFrame, fraction: float, seed: int) -> pl.DataFrame:
    """``interactions`` with a ``split`` column: ``instruct`` for users whose seeded hash falls
    below ``fraction``, else ``pretrain``. The hash is of the user id alone, so a reviewer who
    appears in several categories or releases of one source (Amazon 2014 and 2018 share reviewer
    ids) lands on the same side everywhere."""
    users = interactions.select(pl.col("user_id").unique().sort())
    users = users.with_columns(
        pl.when(unit_interval(users["user_id"], seed) < fraction)
        .then(pl.lit(INSTRUCT))
        .otherwise(pl.lit(PRETRAIN))
        .alias("split")
    )
    return interactions.join(users, on="user_id", how="left", maintain_order="left")


def leaked(output: pl.LazyFrame, held_out: pl.LazyFrame) -> pl.DataFrame:
    """The held-out (user_id, item_id) pairs present in ``output``: a frame with ``user_id`` and
    either ``item_id`` or a list column ``item_ids`` (as documents carry). Empty means no leak."""
    frame = output
    if "item_ids" in frame.collect_schema().names():
        frame = frame.select("user_id", pl.col("item_ids").alias("item_id")).explode("item_id")
    return (
        frame.select(*PAIR)
        .join(held_out_pairs(held_out), on=list(PAIR), how="semi")
        .unique()
        .collect(engine="streaming")
    )
