"""The ``instruct_pairs`` stage as one process ran it before its work was spread over user buckets:
its pool and held-out rules and :func:`build_pairs` with the quota drawn by rank over one table of
every candidate, kept verbatim as the oracle of the bucketed stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from hash_oracle import draw

from recgpt_data.histories import USER, bucket_events
from recgpt_data.instruct.pairs import (
    ALL_USERS,
    INSTRUCT,
    InstructPairsParams,
    PairMaker,
    Pairs,
    iter_histories,
    render_events,
)
from recgpt_data.split import drop_held_out
from recgpt_data.stage import Drops, count
from recgpt_data.tokenizer import DEFAULT_TOKENIZER


def choose(
    candidates: pl.DataFrame, params: InstructPairsParams, seed: int
) -> tuple[pl.DataFrame, Drops, dict[str, dict[str, dict[str, Any]]]]:
    """The configured number of pairs per source and task, by a seeded stable hash of each window;
    the windows left over, by reason; and per source and task the candidates, requested and kept."""
    drops: Drops = Drops()
    counts: dict[str, dict[str, dict[str, Any]]] = {}
    if candidates.height == 0:
        return candidates, drops, counts
    key = pl.concat_str(["task", "dataset", "user_id", pl.col("__target").cast(pl.String)], separator="\x1f")
    draws = [draw(k, seed) for k in candidates.select(key.alias("k"))["k"]]
    ranked = candidates.with_columns(pl.Series("__draw", draws, dtype=pl.Float64)).with_columns(
        pl.col("__draw").rank("ordinal").over(["source", "task"]).alias("__rank")
    )
    kept = []
    for (source, task), group in ranked.group_by(["source", "task"], maintain_order=True):
        wanted = params.count_for(source, task)
        chosen = group if wanted is None else group.filter(pl.col("__rank") <= wanted)
        counts.setdefault(source, {})[task] = {"candidates": group.height, "requested": wanted, "kept": chosen.height}
        if chosen.height < group.height:
            drops.count(f"{task}:over_count", group.height - chosen.height)
        kept.append(chosen)
    return pl.concat(kept).drop("__draw", "__rank"), drops, counts


def build_pairs(
    interactions: pl.LazyFrame,
    items: pl.LazyFrame,
    params: InstructPairsParams,
    seed: int,
    tokenizer: Path = DEFAULT_TOKENIZER,
) -> Pairs:
    """The instruction pairs of ``interactions`` (already cut to the pool), as the ``instruct`` table,
    fitted to ``params.max_tokens`` tokens of ``tokenizer`` (a ``tokenizer.json``)."""
    users = interactions.select(*USER).unique().sort(list(USER)).collect()
    if users.height == 0:
        return Pairs(pl.DataFrame(schema=INSTRUCT))
    events = bucket_events(interactions, items, users)
    info: dict[str, Any] = {"events_without_item_row": events.without_item} if events.without_item else {}
    maker = PairMaker(params, tokenizer)
    rows = [pair for history in iter_histories(render_events(events.frame)) for pair in maker.pairs(history)]
    schema = {**INSTRUCT, "__target": pl.Int64()}
    candidates = pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
    chosen, left_over, counts = choose(candidates, params, seed)
    maker.drops.update(left_over)
    if counts:
        info["pairs"] = counts
    order = ["source", "dataset", "user_id", "task", "__target"]
    instruct = chosen.sort(order, descending=[False, False, False, False, True], maintain_order=True)
    return Pairs(instruct.drop("__target"), maker.drops, info)


def one_process_pairs(
    interactions: pl.LazyFrame,
    items: pl.LazyFrame,
    held_out: pl.LazyFrame | None,
    params: InstructPairsParams,
    seed: int,
    tokenizer: Path = DEFAULT_TOKENIZER,
) -> Pairs:
    """The stage's pairs as one process made them: the pool's interactions, held-out pairs left
    out (counted as ``held_out``), then :func:`build_pairs`."""
    if params.pool != ALL_USERS:
        interactions = interactions.filter(pl.col("split") == params.pool)
    drops = Drops()
    if held_out is not None:
        before = count(interactions)
        interactions = drop_held_out(interactions, held_out)
        drops.count("held_out", before - count(interactions))
    pairs = build_pairs(interactions, items, params, seed, tokenizer)
    drops.update(pairs.drops)
    return Pairs(pairs.instruct, drops, pairs.info)
