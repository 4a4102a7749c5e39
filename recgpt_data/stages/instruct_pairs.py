"""Stage ``instruct_pairs``: rating and next-item pairs from the instruction-pool users
(:mod:`recgpt_data.instruct.pairs`, whose :class:`~recgpt_data.instruct.pairs.InstructPairsParams`
are this stage's parameters), partitioned by user: the prepare step's tasks cut each bucket's
histories into candidate windows and the seeded count per source and task is drawn over all of
them (:mod:`recgpt_data.instruct.tasks`); each bucket then writes its own chosen pairs. The tasks
exchange their files through the step's task folder (the store's, with the output in object
storage), so they run on any node."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import polars as pl

from recgpt_data.errors import UsageError
from recgpt_data.instruct.pairs import ALL_USERS, InstructPairsParams
from recgpt_data.instruct.quota import tally
from recgpt_data.instruct.tasks import (
    BucketJob,
    PoolItemsJob,
    bucket_candidates,
    bucket_pairs,
    chosen_keys,
    pool_items,
    totals,
)
from recgpt_data.instruct.templates import TASKS
from recgpt_data.io.parquet import write_scratch
from recgpt_data.io.storage import join, remove_tree
from recgpt_data.stage import PARTITION_USER, Context, Preparation, Prepared, StageOutput, StageStats, stage

CANDIDATES = "instruct_candidates"  # the prepare step's tables each bucket reads
CHOSEN = "instruct_chosen"


def prepare_instruct(prep: Preparation, params: InstructPairsParams, ctx: Context) -> Prepared:
    """Keep the items the pool names (one task), find every bucket's candidate windows in tasks,
    one per bucket, and choose the pairs kept over all of them (see
    :mod:`recgpt_data.instruct.tasks`); what the tasks dropped and changed, and the candidates,
    requested and kept per source and task, go into the stage's stats."""
    parts = prep.buckets["interactions"]
    if params.pool != ALL_USERS and "split" not in pl.scan_parquet(list(parts[0])).collect_schema().names():
        raise UsageError('instruct_pairs needs the `split` column: run the `split` stage first (or set pool = "all")')

    def files(name: str, index: int) -> tuple[str, ...] | None:
        if name not in prep.buckets:
            return None
        return prep.buckets[name][index if prep.bucketed[name] else 0]

    scratch = join(prep.task_folders(ctx).scratch, "instruct_pairs")
    remove_tree(scratch)  # what an interrupted attempt left
    named = str(join(scratch, "pool-items.parquet"))
    everything = tuple(file for part in parts for file in part)
    list(prep.map(pool_items, [PoolItemsJob(everything, prep.buckets["items"][0], params.pool, named)]))
    jobs = [
        BucketJob(
            index,
            parts[index],
            (named,),
            files("held_out", index),
            params,
            ctx.seed,
            ctx.tokenizer,
            str(join(scratch, f"candidates-{index:05d}.parquet")),
        )
        for index in range(len(parts))
    ]
    done = sorted(prep.map(bucket_candidates, jobs), key=lambda bucket: bucket.index)
    write_scratch(chosen_keys(done, params), prep.scratch / "chosen.parquet")
    counts, left_over = tally(totals(done), params.count_for)
    dropped, changed, info = Counter(left_over.dropped), Counter(), Counter()
    for bucket in done:
        dropped.update(bucket.dropped)
        changed.update(bucket.changed)
        info.update(bucket.info)
    facts: dict[str, Any] = {name: n for name, n in info.items() if n or name == "pool_interactions"}
    if counts:
        facts["pairs"] = counts
    return Prepared(
        tables={CANDIDATES: tuple(job.out for job in jobs), CHOSEN: (str(prep.scratch / "chosen.parquet"),)},
        info=facts,
        stats=StageStats(dropped=dict(dropped), changed=dict(changed)).to_dict(),
    )


@stage(
    "instruct_pairs",
    params=InstructPairsParams,
    reads=("interactions", "items"),
    optional_reads=("held_out",),
    writes=("instruct",),
    settings=("tokenizer",),
    version="4",
    partition=PARTITION_USER,
    prepare=prepare_instruct,
    prepare_anywhere=True,
)
def instruct_pairs_stage(tables: Mapping[str, pl.LazyFrame], params: InstructPairsParams, ctx: Context) -> StageOutput:
    """This bucket's chosen pairs (the prepare step found and chose them), fitted to ``max_tokens``
    tokens of the spec's tokenizer; never a held-out interaction."""
    index = ctx.partition[0] if ctx.partition is not None else 0
    instruct = bucket_pairs(tables[CANDIDATES], tables[CHOSEN], index)
    stats = StageStats(rows_out={"instruct": instruct.height})
    stats.info["by_task"] = {task: int((instruct["task"] == task).sum()) for task in TASKS}
    return StageOutput({"instruct": instruct}, stats)
