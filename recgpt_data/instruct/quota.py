"""The seeded quota of instruction pairs per source and task, drawn alike whether the candidate
windows are in one table or spread over user buckets.

Each candidate gets a draw, a stable hash of its key under the seed (:func:`drawn`). Within its
source and task, candidates are ranked by (draw, dataset, user id, target), a total order that does
not depend on the rows' order nor on which bucket holds a candidate (:func:`ranked`), and the first
``count`` are kept (:func:`first`). A bucket's own first ``count`` hold every candidate of the bucket
that the whole table's first ``count`` hold, so buckets hand on only those, and :func:`first` over
their union keeps what it keeps over the whole table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import polars as pl

from recgpt_data.hashing import unit_interval
from recgpt_data.stage import Drops

DRAW = "__draw"
TARGET = "__target"  # the target's index in the user's history
RANK = "__rank"
GROUP = ("source", "task")
ORDER = (DRAW, "dataset", "user_id", TARGET)  # a total order within a group
KEY = (*GROUP, "dataset", "user_id", TARGET)  # a candidate window
CountFor = Callable[[str, str], "int | None"]  # the pairs kept of a source and task (None: every one)


def drawn(candidates: pl.DataFrame, seed: int) -> pl.DataFrame:
    """``candidates`` with each one's seeded draw in ``[0, 1)``."""
    key = pl.concat_str(["task", "dataset", "user_id", pl.col(TARGET).cast(pl.String)], separator="\x1f")
    return candidates.with_columns(unit_interval(candidates.select(key.alias("k"))["k"], seed).alias(DRAW))


def ranked(candidates: pl.DataFrame) -> pl.DataFrame:
    """Drawn ``candidates`` with each one's rank (from 1) in its source and task, in row order."""
    return (
        candidates.with_row_index("__row")
        .sort([*GROUP, *ORDER])
        .with_columns((pl.int_range(pl.len()).over(list(GROUP)) + 1).alias(RANK))
        .sort("__row")
        .drop("__row")
    )


def first(candidates: pl.DataFrame, count_for: CountFor) -> pl.DataFrame:
    """The ranked ``candidates`` within their source and task's count (all of a group whose count is
    ``None``), in row order, without their rank."""
    groups = candidates.select(GROUP).unique(maintain_order=True)
    limits = groups.with_columns(pl.Series("__wanted", [count_for(*group) for group in groups.rows()], dtype=pl.Int64))
    return (
        candidates.join(limits, on=list(GROUP), how="left", maintain_order="left")
        .filter(pl.col("__wanted").is_null() | (pl.col(RANK) <= pl.col("__wanted")))
        .drop(RANK, "__wanted")
    )


def tally(totals: Mapping[tuple[str, str], int], count_for: CountFor) -> tuple[dict[str, dict[str, dict]], Drops]:
    """Per source and task (``totals``: its candidates), the candidates, the count requested and the
    pairs kept; and the candidates left over, counted as ``<task>:over_count``."""
    counts: dict[str, dict[str, dict]] = {}
    drops = Drops()
    for (source, task), n in totals.items():
        requested = count_for(source, task)
        kept = n if requested is None else min(n, requested)
        counts.setdefault(source, {})[task] = {"candidates": n, "requested": requested, "kept": kept}
        if kept < n:
            drops.count(f"{task}:over_count", n - kept)
    return counts, drops
