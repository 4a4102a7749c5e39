"""Small real stages for the runner's tests: per-user histories, documents, instruction pairs and a
final writer, over the canonical tables the real ``ingest`` stage produces.

They stand in for the production stages so that caching, resume, the Ray engine, the report, the
card and publishing can be tested end to end; importing this module registers them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import polars as pl

from recgpt_data.hashing import unit_interval
from recgpt_data.schema import CHRONOLOGICAL
from recgpt_data.stage import Context, Drops, Params, StageOutput, StageStats, stage
from recgpt_data.tokenizer import load_tokenizer


def spec_text(shared: Path, partitions: int = 3, tail: str = "") -> str:
    """A pipeline over the real Amazon 2018 Magazine Subscriptions sample, through the test stages."""
    return f"""name = "magazines"
seed = 7
partitions = {partitions}

[vars]
raw = "{shared}/amazon2018"

[[stages]]
stage = "ingest"
params.sources = [{{ format = "amazon2018", paths = ["${{raw}}/Magazine_Subscriptions_5.json", "${{raw}}/meta_Magazine_Subscriptions.json.gz"] }}]

[[stages]]
stage = "t_histories"
params.min_items = 6

[[stages]]
stage = "t_documents"

[[stages]]
stage = "t_instruct"

[[stages]]
stage = "t_write"
{tail}"""


class HistoryParams(Params):
    min_items: int = 5


@stage("t_histories", params=HistoryParams, reads=("interactions", "items"), writes=("histories",), partition="user")
def histories(tables: Mapping[str, pl.LazyFrame], params: HistoryParams, ctx: Context) -> StageOutput:
    """Each user's items in chronological order, titled; users with fewer than ``min_items`` dropped."""
    stats = StageStats()
    events = tables["interactions"].collect()
    items = (
        tables["items"]
        .select("dataset", "item_id", "title")
        .unique(["dataset", "item_id"], keep="first", maintain_order=True)
    )
    joined = events.sort([*CHRONOLOGICAL], maintain_order=True).join(
        items.collect(), on=["dataset", "item_id"], how="left", maintain_order="left"
    )
    grouped = joined.group_by("source", "dataset", "user_id", maintain_order=True).agg(
        pl.len().alias("num_items"),
        pl.col("item_id"),
        pl.col("title").fill_null("?").alias("titles"),
    )
    short = grouped.filter(pl.col("num_items") < params.min_items)
    drops = Drops()
    drops.count("short_history", int(short["num_items"].sum() or 0))
    kept = grouped.filter(pl.col("num_items") >= params.min_items).sort("dataset", "user_id")
    return StageOutput({"histories": kept}, stats, drops)


class DocumentParams(Params):
    validation_fraction: float = 0.1


@stage("t_documents", params=DocumentParams, reads=("histories",), writes=("documents",), partition="user")
def documents(tables: Mapping[str, pl.LazyFrame], params: DocumentParams, ctx: Context) -> StageOutput:
    """One text per user (its titles, one a line), token-counted, with its item ids (the output
    contract's columns), split by a seeded user hash."""
    frame = tables["histories"].collect()
    text = pl.lit("Given the interaction history of a user with products as follows:\n\n") + pl.col("titles").list.eval(
        pl.lit("Title: ") + pl.element()
    ).list.join("\n")
    frame = frame.with_columns(text.alias("text"))
    tokenizer = load_tokenizer()
    counts = [len(e.ids) for e in tokenizer.encode_batch(frame["text"].to_list(), add_special_tokens=False)]
    split = pl.when(pl.Series(unit_interval(frame["user_id"], ctx.seed)) < params.validation_fraction)
    out = frame.select(
        "text",
        pl.Series("num_tokens", counts, dtype=pl.Int64),
        "source",
        "dataset",
        "user_id",
        pl.lit(0, pl.Int64).alias("chunk_index"),
        pl.col("num_items").cast(pl.Int64),
        pl.col("item_id").alias("item_ids"),
    ).with_columns(split.then(pl.lit("validation")).otherwise(pl.lit("train")).alias("split"))
    return StageOutput({"documents": out}, StageStats())


@stage("t_instruct", params=Params, reads=("histories",), writes=("instruct",), partition="user")
def instruct(tables: Mapping[str, pl.LazyFrame], params: Params, ctx: Context) -> StageOutput:
    """A next-item pair per user: the history but the last item in, the last item's title out."""
    frame = tables["histories"].collect()
    out = frame.select(
        (
            pl.lit("Items so far:\n") + pl.col("titles").list.slice(0, pl.col("titles").list.len() - 1).list.join("\n")
        ).alias("prompt"),
        pl.col("titles").list.last().alias("response"),
        pl.lit("next_item").alias("task"),
        "source",
        "dataset",
        "user_id",
    )
    return StageOutput({"instruct": out}, StageStats())


@stage("t_write", params=Params, reads=("documents",), optional_reads=("instruct",), writes=())
def write(tables: Mapping[str, pl.LazyFrame], params: Params, ctx: Context) -> StageOutput:
    """Write the final folder's data files: pretrain train/validation and instruct train."""
    from recgpt_data.io.parquet import write_parquet

    docs = tables["documents"].collect().sort("dataset", "user_id", "chunk_index")
    for split in ("train", "validation"):
        part = docs.filter(pl.col("split") == split).drop("split")
        write_parquet(part, ctx.out_dir / "data" / "pretrain" / f"{split}-00000-of-00001.parquet")
    if "instruct" in tables:
        pairs = tables["instruct"].collect().sort("dataset", "user_id")
        write_parquet(pairs, ctx.out_dir / "data" / "instruct" / "train-00000-of-00001.parquet")
    return StageOutput({}, StageStats())
