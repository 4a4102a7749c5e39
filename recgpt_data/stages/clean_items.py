"""Stage ``clean_items``: item text repaired, untitled items dropped
(:mod:`recgpt_data.clean.text`, :mod:`recgpt_data.clean.filters`), in tasks over chunks of rows
(:mod:`recgpt_data.clean.item_tasks`), so that one large dataset's items spread over the workers
(on any node: with the output in object storage the tasks write their chunks into the store)."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl
from pydantic import Field

from recgpt_data.clean import item_tasks
from recgpt_data.clean.item_tasks import ChunkJob, clean_chunk, plan_chunks
from recgpt_data.io.storage import join, remove_tree
from recgpt_data.stage import Context, Params, Preparation, Prepared, StageOutput, StageStats, stage


class CleanItemsParams(Params):
    """Which item columns to clean, the length cap, and whether untitled items are dropped."""

    columns: list[str] = Field(default_factory=lambda: ["title", "brand", "author", "description", "city"])
    max_chars: int = Field(default=100_000, ge=1)
    drop_untitled: bool = True


def prepare_clean_items(prep: Preparation, params: CleanItemsParams, ctx: Context) -> Prepared:
    """Clean the items in tasks, one per chunk of rows, writing in the step's task folder (the
    store's, where it is lent one); the stage's tables are the chunks' files in row order, its
    counts their sums."""
    [files] = prep.buckets["items"]
    scratch = join(prep.task_folders(ctx).scratch, "clean_items")
    remove_tree(scratch)  # what an interrupted attempt left
    rows = pl.scan_parquet(list(files)).select(pl.len()).collect().item()  # parquet footers
    jobs = [
        ChunkJob(
            number, files, offset, size, tuple(params.columns), params.max_chars, params.drop_untitled, str(scratch)
        )
        for number, (offset, size) in enumerate(plan_chunks(rows, item_tasks.CHUNK_ROWS))
    ]
    done = sorted(prep.map(clean_chunk, jobs), key=lambda chunk: chunk.number)
    stats = StageStats(
        rows_in={"items": sum(chunk.rows_in for chunk in done)}, rows_out={"items": sum(c.rows_out for c in done)}
    )
    for chunk in done:
        for counts, more in ((stats.changed, chunk.changed), (stats.dropped, chunk.dropped)):
            for reason, n in more.items():
                counts[reason] = counts.get(reason, 0) + n
    return Prepared(
        tables={},
        outputs={table: tuple(chunk.files[table] for chunk in done) for table in done[0].files},
        stats=stats.to_dict(),
    )


@stage(
    "clean_items",
    params=CleanItemsParams,
    reads=("items",),
    writes=("items",),
    version="2",
    prepare=prepare_clean_items,
    prepare_anywhere=True,
)
def clean_items_stage(tables: Mapping[str, pl.LazyFrame], params: CleanItemsParams, ctx: Context) -> StageOutput:
    """Nothing left to do: the prepare step's tasks cleaned the items and counted what they changed
    and dropped (:func:`recgpt_data.clean.item_tasks.clean_items` is the rule)."""
    return StageOutput({}, StageStats())
