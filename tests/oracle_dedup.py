"""Deduplication as one process over whole datasets: the implementation the ``dedup`` stage had
before it ran in user buckets, kept as the oracle its distributed form must match row for row."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from recgpt_data.dedup.lsh import cluster_texts
from recgpt_data.dedup.normalize import normalize_expr
from recgpt_data.dedup.scopes import (
    COUNTERS,
    VARIANT_KEYS,
    DedupParams,
    KeepRule,
    _loser,
    _token,
    _with_products,
)
from recgpt_data.hashing import fnv1a64
from recgpt_data.schema import CHRONOLOGICAL
from recgpt_data.stage import Drops

WORK = ("_norm", "_label", "_rank")  # working columns of the interactions, never in the output


def keep_rank(frame: pl.DataFrame, rule: KeepRule) -> np.ndarray:
    """Each row's rank under the keep rule (0 = kept first); rows must be in CHRONOLOGICAL order."""
    row = pl.int_range(pl.len())
    if rule == "earliest":
        keys, descending = [row], [False]
    elif rule == "most_helpful":
        keys, descending = [pl.col("helpful_votes").fill_null(0), row], [True, False]
    else:
        keys, descending = [pl.col("review_text").str.len_chars().fill_null(0), row], [True, False]
    order = frame.select(pl.arg_sort_by(keys, descending=descending)).to_series().to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _duplicate_users(frame: pl.DataFrame, params: DedupParams, drops: Drops) -> tuple[pl.DataFrame, int]:
    """Scope (c): drop every user whose history near-duplicates a better-ranked user's; returns the
    rows kept and how many users went."""
    item = _token(
        "i",
        pl.concat_str([pl.col("item_id"), pl.col("rating").cast(pl.String).fill_null("")], separator="\x1f"),
    )
    text = _token("c", pl.col("cluster_id"))
    keys = ["dataset", "user_id"]
    histories = (
        frame.group_by(keys, maintain_order=True)
        .agg(pl.len().alias("n"), pl.col("_rank").min())
        .filter(pl.col("n") >= params.user_min_interactions)
        .with_row_index("_user")
    )
    if histories.height < 2:
        return frame, 0
    rows = frame.join(histories.select(*keys, "_user"), on=keys, how="inner", maintain_order="left")
    tokens = pl.concat(
        [
            rows.select("_user", item.alias("tok")),
            rows.filter(pl.col("cluster_id").is_not_null()).select("_user", text.alias("tok")),
        ]
    )
    history_text = (
        tokens.with_columns(fnv1a64(tokens["tok"]).cast(pl.String).alias("tok"))
        .group_by("_user")
        .agg(pl.col("tok").unique().sort().str.join(" "))
        .sort("_user")["tok"]
    )
    clusters = cluster_texts(history_text, params.config(params.user_threshold, 1))
    histories = histories.with_columns(pl.Series("_ucluster", clusters.label))
    best = histories.with_columns(pl.col("_rank").min().over("_ucluster").alias("_best"))
    dropped_users = best.filter((pl.col("_ucluster") >= 0) & (pl.col("_rank") != pl.col("_best"))).select(keys)
    if not dropped_users.height:
        return frame, 0
    gone = frame.join(dropped_users, on=keys, how="semi", maintain_order="left")
    drops.add("interactions", gone.drop(*WORK), "duplicate_user")
    return frame.join(dropped_users, on=keys, how="anti", maintain_order="left"), dropped_users.height


def _duplicate_items(
    items: pl.DataFrame, frame: pl.DataFrame, params: DedupParams, drops: Drops
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Scope (d): cluster near-identical items per dataset; remap, or only mark them. Returns the
    items, the interactions and how many items are in a cluster of two or more."""
    text = pl.concat_str(
        [pl.col("title").fill_null(""), pl.col("brand").fill_null(""), pl.col("description").fill_null("")],
        separator=" ",
    )
    items = items.with_row_index("_irow").with_columns(normalize_expr(text).alias("_inorm"))
    labels = np.full(items.height, -1, dtype=np.int64)
    for _, part in items.group_by("dataset", maintain_order=True):
        # int64: the unsigned row numbers once turned an empty text's -1 into 2**32 - 1, one "cluster"
        # of every item without text (remapped into one under ``items="remap"``)
        rows = part["_irow"].to_numpy().astype(np.int64)
        local = cluster_texts(part["_inorm"], params.config(params.item_threshold, params.ngram)).label
        labels[rows] = np.where(local >= 0, rows[np.maximum(local, 0)], -1)
    items = items.with_columns(pl.Series("_ilabel", labels))
    items = items.with_columns(
        pl.when(pl.col("_ilabel") >= 0).then(pl.col("_ilabel")).alias("cluster_id"),
        pl.when(pl.col("_ilabel") >= 0).then(pl.len().over("_ilabel")).cast(pl.Int64).alias("cluster_size"),
    )
    clustered = int(items["cluster_size"].fill_null(1).gt(1).sum())
    if params.items == "mark":
        return items.drop("_irow", "_inorm", "_ilabel"), frame, clustered
    counts = frame.group_by("dataset", "item_id").agg(pl.len().alias("_uses"))
    items = items.join(counts, on=["dataset", "item_id"], how="left", maintain_order="left").with_columns(
        pl.col("_uses").fill_null(0)
    )
    items = (
        items.sort(["_ilabel", "_uses", "_irow"], descending=[False, True, False])
        .with_columns(pl.int_range(pl.len()).over("_ilabel").alias("_iorder") + 1)
        .sort("_irow")
    )
    loser = (pl.col("_ilabel") >= 0) & (pl.col("_iorder") != 1)
    winners = items.filter(pl.col("_iorder") == 1)
    mapping = (
        items.filter(loser)
        .join(winners.select("_ilabel", pl.col("item_id").alias("_kept")), on="_ilabel", how="left")
        .join(winners.select("dataset", "item_id"), on=["dataset", "item_id"], how="anti", maintain_order="left")
        .unique(subset=["dataset", "item_id"], keep="first", maintain_order=True)
        .select("dataset", "item_id", "_kept")
    )
    kept_items = items.filter(~loser)
    drops.add("items", items.filter(loser).drop("_irow", "_inorm", "_ilabel", "_uses", "_iorder"), "duplicate_item")
    frame = frame.join(mapping, on=["dataset", "item_id"], how="left", maintain_order="left")
    drops.change("item_id_remapped", int(frame["_kept"].is_not_null().sum()))
    frame = frame.with_columns(pl.coalesce("_kept", "item_id").alias("item_id")).drop("_kept")
    return kept_items.drop("_irow", "_inorm", "_ilabel", "_uses", "_iorder"), frame, clustered


@dataclass
class Deduped:
    """Deduplicated interactions and items, what was dropped, blanked and changed (by reason, with
    the rows), the :data:`COUNTERS` summed over datasets, and each dataset's rows and changes."""

    interactions: pl.DataFrame
    items: pl.DataFrame
    drops: Drops
    counters: dict[str, int]
    by_dataset: dict[str, dict[str, Any]]


def dedup(interactions: pl.LazyFrame, items: pl.LazyFrame, params: DedupParams) -> Deduped:
    """Exact and near-duplicate removal over interactions and items, in the four scopes, one dataset
    at a time (so a bucket of datasets gives the same rows as each dataset alone)."""
    names = sorted(
        set(interactions.select("dataset").unique().collect()["dataset"].to_list())
        | set(items.select("dataset").unique().collect()["dataset"].to_list())
    )
    drops, counters, by_dataset = Drops(), Counter(dict.fromkeys(COUNTERS, 0)), {}
    done = []
    for name in names or [None]:
        chosen = (pl.col("dataset") == name) if name is not None else pl.lit(False)
        frame = interactions.filter(chosen).collect()
        one = dedup_dataset(frame, items.filter(chosen).collect(), params)
        drops.update(one.drops)
        counters.update(one.counters)
        if frame.height:
            by_dataset[name] = {"rows": frame.height, "changed": dict(one.drops.changed)}
        done.append(one)
    return Deduped(
        pl.concat([d.interactions for d in done]),
        pl.concat([d.items for d in done]),
        drops,
        dict(counters),
        by_dataset,
    )


def dedup_dataset(frame: pl.DataFrame, items: pl.DataFrame, params: DedupParams) -> Deduped:
    """The four scopes over one dataset's interactions and items."""
    drops = Drops()
    frame = frame.drop([c for c in ("cluster_id", "cluster_size") if c in frame.columns])
    frame = frame.sort(list(CHRONOLOGICAL), maintain_order=True).with_columns(
        normalize_expr("review_text").alias("_norm")
    )
    clusters = cluster_texts(frame["_norm"], params.config(params.threshold, params.ngram))
    frame = frame.with_columns(
        pl.Series("_label", clusters.label), pl.Series("_rank", keep_rank(frame, params.keep))
    ).with_columns(
        pl.when(pl.col("_label") >= 0).then(pl.col("_label")).alias("cluster_id"),
        pl.when(pl.col("_label") >= 0).then(pl.len().over("_label")).cast(pl.Int64).alias("cluster_size"),
    )
    exact_copies = int(((clusters.exact >= 0) & (clusters.exact != np.arange(len(clusters.exact)))).sum())
    counts = {
        "candidate_edges": clusters.candidate_edges,
        "verified_edges": clusters.verified_edges,
        "empty_texts": int((clusters.label < 0).sum()),
        "exact_duplicate_texts": exact_copies,
        "texts_in_duplicate_clusters": int(frame["cluster_size"].fill_null(1).gt(1).sum()),
    }
    if params.variants:
        frame = _with_products(frame, items, params.variant_title_similarity)
        posted = pl.col("cluster_id").is_not_null() & pl.col("timestamp").is_not_null()
        variant = posted & _loser([*VARIANT_KEYS, "_product"])
        drops.add("interactions", frame.filter(variant).drop(*WORK, "_product"), "variant_duplicate")
        frame = frame.filter(~variant).drop("_product")
    if params.users:
        frame, counts["duplicate_users"] = _duplicate_users(frame, params, drops)
    if params.items != "off":
        items, frame, counts["items_in_duplicate_clusters"] = _duplicate_items(items, frame, params, drops)
    if params.text_action != "keep":
        copy = pl.col("cluster_id").is_not_null() & _loser(["cluster_id"])
        if params.text_action == "drop":
            drops.add("interactions", frame.filter(copy).drop(*WORK), "duplicate_text")
            frame = frame.filter(~copy)
        else:
            drops.blank("interactions", frame.filter(copy), "review_text", "review_text_duplicate")
            frame = frame.with_columns(pl.when(copy).then(None).otherwise(pl.col("review_text")).alias("review_text"))
    return Deduped(frame.drop(*WORK), items, drops, counts, {})
