"""The corpus beside the RecGPT paper's corpus statistics: users, items, interactions and tokens per
source, counted from the written pre-training shards, and each total's ratio to the paper's.

The paper (Ngo and Nguyen, arXiv 2405.12715) gives its pre-training corpus as 10.16M users, 10.31M
items, 258.1M interactions and 20.5B tokens over its sources (Amazon, Anime, BookCrossing, Food,
Goodreads, HotelRec, MovieLens, Netflix, Steam, WikiRec, Yelp). Its per-source figures are not in
the text this project could consult, so ratios are given for the totals only.

Counts are of what a trainer reads: ``data/pretrain/*.parquet`` (train and validation), after any
token budget. A user or an item is one of a dataset (the same id in two datasets counts twice, as
the paper sums its datasets); interactions are the items the documents hold; tokens their
``num_tokens`` (GPT-NeoX-20B, without EOS).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

PAPER_TOTALS = {"users": 10_160_000, "items": 10_310_000, "interactions": 258_100_000, "tokens": 20_500_000_000}
COUNTS = tuple(PAPER_TOTALS)
SHARDS = Path("data") / "pretrain"


def source_counts(shards: pl.LazyFrame) -> pl.DataFrame:
    """Per source: users, items, interactions and tokens of the pre-training documents."""
    per_source = shards.group_by("source").agg(
        pl.struct("dataset", "user_id").n_unique().alias("users"),
        pl.col("num_items").sum().alias("interactions"),
        pl.col("num_tokens").sum().alias("tokens"),
    )
    items = (
        shards.select("source", "dataset", pl.col("item_ids").alias("item_id"))
        .explode("item_id")
        .group_by("source")
        .agg(pl.struct("dataset", "item_id").n_unique().alias("items"))
    )
    table = per_source.join(items, on="source", how="left").sort("source").collect()
    return table.select("source", *[pl.col(c).fill_null(0).cast(pl.Int64) for c in COUNTS])


def against_paper(folder: Path) -> dict[str, Any] | None:
    """The per-source counts of ``folder``'s pre-training shards, their totals, the paper's totals
    and the ratios; ``None`` where the run wrote no shards."""
    files = sorted((folder / SHARDS).glob("*.parquet"))
    if not files:
        return None
    table = source_counts(pl.scan_parquet(files))
    totals = {c: int(table[c].sum()) for c in COUNTS}
    return {
        "per_source": table.to_dicts(),
        "totals": totals,
        "paper_totals": dict(PAPER_TOTALS),
        "ratio_to_paper": {c: totals[c] / PAPER_TOTALS[c] for c in COUNTS},
    }


def against_paper_markdown(paper: dict[str, Any]) -> str:
    """The table: one row per source, the totals, the paper's totals and the ratio of ours to theirs."""
    header = ["source", *COUNTS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in paper["per_source"]:
        lines.append("| " + " | ".join([row["source"], *[f"{row[c]:,}" for c in COUNTS]]) + " |")
    lines.append("| **total** | " + " | ".join(f"{paper['totals'][c]:,}" for c in COUNTS) + " |")
    lines.append("| paper | " + " | ".join(f"{paper['paper_totals'][c]:,}" for c in COUNTS) + " |")
    lines.append("| ratio to paper | " + " | ".join(f"{paper['ratio_to_paper'][c]:.3g}" for c in COUNTS) + " |")
    return "\n".join(lines)
