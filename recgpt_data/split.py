"""The benchmark leakage guard and the user-level split, two stages.

``hold_out`` drops every interaction whose (user_id, item_id) a benchmark holds out (its validation
and test items), whatever dataset or release it comes from, and counts it; it runs before
``filter_users`` so that RecGPT's minimum history holds in what remains. ``split`` then sends every
user to pre-training or to the instruction pool by a seeded stable hash of the user id (the same
reviewer id goes the same way in every dataset and release, so no user is in both).
"""

from __future__ import annotations

import polars as pl
from pydantic import Field

from recgpt_data.benchmarks import HELD_OUT
from recgpt_data.errors import UsageError
from recgpt_data.hashing import unit_interval
from recgpt_data.stage import Context, Drops, Frame, Params, StageOutput, StageStats, count, stage

PRETRAIN = "pretrain"
INSTRUCT = "instruct"
PAIR = ("user_id", "item_id")
HELD = "__held_out"  # marks the interactions a held-out pair names, while hold_out cuts them


def held_out_pairs(held_out: Frame) -> pl.LazyFrame:
    """The distinct (user_id, item_id) pairs of a held-out table."""
    return held_out.lazy().select(*PAIR).unique(maintain_order=True)


def drop_held_out(interactions: Frame, held_out: Frame) -> pl.LazyFrame:
    """``interactions`` without any whose (user_id, item_id) is held out, from any dataset."""
    return interactions.lazy().join(held_out_pairs(held_out), on=list(PAIR), how="anti")


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


def leaked(output: Frame, held_out: Frame) -> pl.DataFrame:
    """The held-out (user_id, item_id) pairs present in ``output``: a frame with ``user_id`` and
    either ``item_id`` or a list column ``item_ids`` (as documents carry). Empty means no leak."""
    frame = output.lazy()
    if "item_ids" in frame.collect_schema().names():
        frame = frame.select("user_id", pl.col("item_ids").alias("item_id")).explode("item_id")
    return (
        frame.select(*PAIR)
        .join(held_out_pairs(held_out), on=list(PAIR), how="semi")
        .unique()
        .collect(engine="streaming")
    )


class HoldOutParams(Params):
    """No parameters: the ``held_out`` table says what to drop."""


@stage(
    "hold_out",
    params=HoldOutParams,
    reads=("interactions", "held_out"),
    writes=("interactions",),
    partition="user",
    version="1",
)
def hold_out_stage(tables: dict, params: HoldOutParams, ctx: Context) -> StageOutput:
    """Drop every interaction a benchmark holds out (all datasets and releases), counted as ``held_out``."""
    stats = StageStats()
    interactions, held_out = tables["interactions"], tables["held_out"]
    stats.rows_in["interactions"] = count(interactions)
    stats.rows_in["held_out"] = count(held_out)
    marked = held_out_pairs(held_out).with_columns(pl.lit(True).alias(HELD))
    flagged = (
        interactions.lazy()
        .join(marked, on=list(PAIR), how="left", maintain_order="left")
        .collect(engine="streaming")
    )
    held = flagged[HELD].is_not_null()
    drops = Drops(stats)
    drops.add("interactions", flagged.filter(held).drop(HELD), "held_out")
    kept = flagged.filter(~held).drop(HELD)
    return StageOutput({"interactions": kept}, stats, dropped=drops.tables())


class SplitParams(Params):
    instruct_fraction: float = Field(0.005, ge=0.0, le=1.0)


@stage(
    "split",
    params=SplitParams,
    reads=("interactions",),
    optional_reads=("held_out",),
    writes=("interactions",),
    partition="user",
    version="2",
)
def split_stage(tables: dict, params: SplitParams, ctx: Context) -> StageOutput:
    """Split users pretrain / instruct; refuse input that still holds a held-out interaction."""
    stats = StageStats()
    interactions = tables["interactions"].lazy().collect(engine="streaming")
    stats.rows_in["interactions"] = interactions.height
    held_out = tables.get("held_out", pl.DataFrame(schema=HELD_OUT))
    if interactions.height and (found := leaked(interactions, held_out)).height:
        raise UsageError(
            f"split: {found.height} held-out (user_id, item_id) pairs are in its input; "
            "run `hold_out` before `filter_users` and `split`"
        )
    out = assign_split(interactions, params.instruct_fraction, ctx.seed)
    users = out.group_by("split").agg(
        pl.struct("dataset", "user_id").n_unique().alias("users"), pl.len().alias("rows")
    )
    stats.info["users"] = {row["split"]: row["users"] for row in users.sort("split").iter_rows(named=True)}
    stats.info["interactions"] = {
        row["split"]: row["rows"] for row in users.sort("split").iter_rows(named=True)
    }
    return StageOutput({"interactions": out}, stats)
