"""The ``instruct_pairs`` stage's heavy work as tasks on the run's engine, one per user bucket.

:func:`pool_items` first keeps the item rows the instruction pool names (a small table), so that
the whole items table is read once, not once per bucket. :func:`bucket_candidates` then reads one bucket's instruction-pool interactions (held-out pairs left
out), cuts its users' histories into every candidate window (:func:`~recgpt_data.instruct.pairs.candidate_pairs`:
rendering and tokenizing, the stage's cost), and keeps the bucket's first ``count`` candidates of each
source and task by the seeded order of :mod:`recgpt_data.instruct.quota`. It writes them into the
stage's scratch folder and hands back their keys and what it counted. :func:`chosen_keys` then picks
the first ``count`` of each source and task over all buckets' keys: the windows one process drawing
from every user would keep, whatever the number of buckets. Each bucket of the stage keeps its own
(:func:`bucket_pairs`). Tasks read their inputs and write their files at local paths or the
store's URLs alike, so with the output in object storage they run on any node.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recgpt_data.instruct.pairs import ALL_USERS, InstructPairsParams, candidate_pairs, in_order
from recgpt_data.instruct.quota import DRAW, GROUP, KEY, drawn, first, ranked
from recgpt_data.io.parquet import write_scratch
from recgpt_data.io.storage import location_of
from recgpt_data.split import drop_held_out
from recgpt_data.stage import Drops

BUCKET = "__bucket"  # which bucket's task wrote a candidate


@dataclass(frozen=True)
class PoolItemsJob:
    """The whole interactions and items tables (their files), the pool drawn from, and the scratch
    file for the item rows the pool names (a local path or a URL of the store)."""

    interactions: tuple[str, ...]
    items: tuple[str, ...]
    pool: str
    out: str


def pool_items(job: PoolItemsJob) -> None:
    """Write the item rows (every column, in table order) whose item id a pool interaction names:
    the one pass over the whole items table, so that each bucket's task reads only these."""
    interactions = pl.scan_parquet(list(job.interactions))
    if job.pool != ALL_USERS:
        interactions = interactions.filter(pl.col("split") == job.pool)
    named = interactions.select(pl.col("item_id").unique()).collect()["item_id"]
    kept = pl.scan_parquet(list(job.items)).filter(pl.col("item_id").is_in(named.implode())).collect()
    write_scratch(kept, location_of(job.out))


@dataclass(frozen=True)
class BucketJob:
    """One user bucket's tables (its files of each), the stage's parameters, seed and tokenizer,
    and the scratch file for its candidates (a local path or a URL of the store)."""

    index: int
    interactions: tuple[str, ...]
    items: tuple[str, ...]
    held_out: tuple[str, ...] | None
    params: InstructPairsParams
    seed: int
    tokenizer: Path
    out: str


@dataclass(frozen=True)
class BucketDone:
    """A bucket's candidates per source and task, the keys of those it kept, what it dropped and
    changed by reason, and its counters (``pool_interactions``, ``events_without_item_row``)."""

    index: int
    totals: dict[tuple[str, str], int]
    keys: pl.DataFrame
    dropped: dict[str, int]
    changed: dict[str, int]
    info: dict[str, int]


def bucket_candidates(job: BucketJob) -> BucketDone:
    """The candidates of one bucket's pool users (see the module docstring)."""
    interactions = pl.scan_parquet(list(job.interactions))
    if job.params.pool != ALL_USERS:
        interactions = interactions.filter(pl.col("split") == job.params.pool)
    pool = interactions.collect()
    info = {"pool_interactions": pool.height} if job.params.pool != ALL_USERS else {}
    drops = Drops()
    if job.held_out is not None:
        guarded = drop_held_out(pool.lazy(), pl.scan_parquet(list(job.held_out))).collect()
        drops.count("held_out", pool.height - guarded.height)
        pool = guarded
    found = candidate_pairs(pool.lazy(), pl.scan_parquet(list(job.items)), job.params, job.tokenizer)
    drops.update(found.drops)
    candidates = found.instruct
    kept = first(ranked(drawn(candidates, job.seed)), job.params.count_for)
    write_scratch(kept.with_columns(pl.lit(job.index, pl.Int64).alias(BUCKET)), location_of(job.out))
    totals = {(source, task): n for source, task, n in candidates.group_by(list(GROUP)).len().rows()}
    return BucketDone(
        job.index, totals, kept.select(KEY + (DRAW,)), dict(drops.dropped), dict(drops.changed), {**info, **found.info}
    )


def chosen_keys(done: list[BucketDone], params: InstructPairsParams) -> pl.DataFrame:
    """The windows kept over all buckets, by key, among the buckets' own first ``count``."""
    keys = pl.concat([bucket.keys for bucket in done])
    return first(ranked(keys), params.count_for).select(KEY)


def totals(done: list[BucketDone]) -> dict[tuple[str, str], int]:
    """The candidates of every source and task over all buckets, by source then task."""
    summed: Counter[tuple[str, str]] = Counter()
    for bucket in done:
        summed.update(bucket.totals)
    return dict(sorted(summed.items()))


def bucket_pairs(candidates: pl.LazyFrame, chosen: pl.LazyFrame, index: int) -> pl.DataFrame:
    """Bucket ``index``'s pairs: its candidates among the chosen keys, as ``instruct`` rows."""
    mine = candidates.filter(pl.col(BUCKET) == index).join(chosen, on=list(KEY), how="semi")
    return in_order(mine.collect().drop(BUCKET, DRAW))
