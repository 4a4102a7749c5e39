"""How many instruction pairs each source and task yields from its configured counts.

A source yields ``min(requested, available)`` pairs of a task: ``requested`` is its count in the
``instruct_pairs`` parameters (``None``: every window), ``available`` the windows its instruction-pool
users' histories hold (unknown before a run; measured from canonical tables with
:func:`available_windows`). A source whose template has no rating pairs yields none.
:data:`PAPER_COUNTS` is the paper's scale: 100K+ pairs over the two tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recgpt_data.instruct.pairs import ALL_USERS, InstructPairsParams, TaskCounts, build_pairs
from recgpt_data.instruct.templates import RATING, TASKS
from recgpt_data.sources import FORMATS, get_source
from recgpt_data.tokenizer import DEFAULT_TOKENIZER

PAPER_PAIRS_PER_TASK = 5_000
PAPER_COUNTS = InstructPairsParams(
    counts={
        name: TaskCounts(
            rating=PAPER_PAIRS_PER_TASK if get_source(name).template.rating_pairs else 0,
            next_item=PAPER_PAIRS_PER_TASK,
        )
        for name in FORMATS
    }
)


@dataclass(frozen=True)
class PlanRow:
    """One source and task: the pairs asked for, the windows available (None: not measured) and the
    pairs it yields (None: every window, count unknown until measured)."""

    source: str
    task: str
    requested: int | None
    available: int | None
    yields: int | None


def rating_pairs_allowed(source: str) -> bool:
    """Whether ``source``'s default template makes rating pairs."""
    return get_source(source).template.rating_pairs


def plan(
    params: InstructPairsParams,
    sources: list[str] | None = None,
    available: dict[tuple[str, str], int] | None = None,
) -> list[PlanRow]:
    """The yield of every source (default: those ``params.counts`` names, else every format) and task."""
    rows = []
    for source in sources or sorted(params.counts) or sorted(FORMATS):
        for task in TASKS:
            requested = params.count_for(source, task)
            have = None if available is None else available.get((source, task), 0)
            if task == RATING and not rating_pairs_allowed(source):
                requested, have = 0, have if have is None else 0
            if requested is None:
                yields = have
            elif have is None:
                yields = requested
            else:
                yields = min(requested, have)
            rows.append(PlanRow(source, task, requested, have, yields))
    return rows


def available_windows(
    interactions: pl.LazyFrame, items: pl.LazyFrame, params: InstructPairsParams, tokenizer: Path = DEFAULT_TOKENIZER
) -> dict[tuple[str, str], int]:
    """The windows each source and task holds in ``interactions`` (already cut to the pool), by
    building every candidate pair once."""
    every = params.model_copy(update={"counts": {}, "default": TaskCounts()})
    pairs = build_pairs(interactions, items, every, 0, tokenizer).instruct
    counted = pairs.group_by(["source", "task"]).len().rows()
    return {(source, task): n for source, task, n in counted}


def total(rows: list[PlanRow]) -> int | None:
    """The pairs the whole plan yields (None where some source's yield is unknown)."""
    values = [row.yields for row in rows]
    return None if any(v is None for v in values) else sum(values)  # type: ignore[misc]


def pool_interactions(interactions: pl.LazyFrame, pool: str) -> pl.LazyFrame:
    """The interactions of the instruction pool (all of them where ``pool`` is ``"all"`` or there is
    no ``split`` column yet)."""
    if pool == ALL_USERS or "split" not in interactions.collect_schema().names():
        return interactions
    return interactions.filter(pl.col("split") == pool)
