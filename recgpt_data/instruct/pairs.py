"""Instruction pairs from the instruction-pool users' histories (the library of the
``instruct_pairs`` stage, whose parameters are :class:`InstructPairsParams`).

Each user's history (one dataset, CHRONOLOGICAL) is cut into windows forward from its oldest item
(:mod:`recgpt_data.instruct.windows`): each window takes as many items as fit the token budget, its last
item the target; the next starts on the previous one's last two items, as the authors' rows do. Rating
windows end only on a rated item, and are not made for sources whose template says
``rating_pairs = False``. Per source and task, a configured number of windows is kept, chosen by a
seeded stable hash, so the same input and seed give the same pairs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import Field

from recgpt_data.histories import USER, bucket_events, template_for
from recgpt_data.instruct.quota import DRAW, GROUP, TARGET, drawn, first, ranked, tally
from recgpt_data.instruct.templates import MAX_TOKENS, NEXT_ITEM, RATING, PairBuilder
from recgpt_data.instruct.windows import WindowCutter
from recgpt_data.serialize import field_exprs, item_line_expr
from recgpt_data.stage import Drops, Params
from recgpt_data.tokenizer import DEFAULT_TOKENIZER, load_tokenizer

INSTRUCT: dict[str, pl.DataType] = {
    "prompt": pl.String(),
    "response": pl.String(),
    "task": pl.String(),
    "source": pl.String(),
    "dataset": pl.String(),
    "user_id": pl.String(),
    "item_id": pl.String(),  # the target item
    "item_ids": pl.List(pl.String()),  # every item the pair shows, target last
    "num_items": pl.Int64(),
}


ALL_USERS = "all"


class TaskCounts(Params):
    """How many pairs of each task to keep for a source; ``None`` keeps every window."""

    rating: int | None = Field(None, ge=0)
    next_item: int | None = Field(None, ge=0)

    def of(self, task: str) -> int | None:
        return self.rating if task == RATING else self.next_item


class InstructPairsParams(Params):
    counts: dict[str, TaskCounts] = Field(default_factory=dict)  # by source format, e.g. "amazon2018"
    default: TaskCounts = TaskCounts()  # for sources not in ``counts``
    max_pairs_per_user: int | None = Field(None, ge=1)  # the newest windows kept per user, dataset and task
    min_history: int = Field(1, ge=1)  # items before the target
    max_tokens: int = Field(MAX_TOKENS, ge=16)
    pool: str = "instruct"  # the ``split`` value of the users to draw from; "all": every user

    def count_for(self, source: str, task: str) -> int | None:
        return self.counts.get(source, self.default).of(task)


@dataclass
class UserHistory:
    """One user's events in one dataset, rendered three ways, with the template's noun."""

    source: str
    dataset: str
    user_id: str
    noun: str
    rating_pairs: bool
    item_ids: list[str]
    full: list[str]  # the pre-training line (rating included)
    unrated: list[str]  # the pre-training fields without the rating: a rating target's line
    short: list[str]  # the response fields: next-item lines
    ratings: list[str | None]  # rating text (``5.0/5.0``) or None


def render_events(events: pl.DataFrame) -> pl.DataFrame:
    """``events`` (joined with items, in history order) with each template's lines and noun added."""
    parts = []
    indexed = events.with_row_index("__row")
    for (source, dataset), group in indexed.group_by(["source", "dataset"], maintain_order=True):
        template = template_for(source, dataset)
        unrated = tuple(f for f in template.fields if f != "Rating")
        parts.append(
            group.with_columns(
                pl.lit(template.noun).alias("__noun"),
                pl.lit(template.rating_pairs).alias("__rating_pairs"),
                item_line_expr(template.fields, group.columns).alias("__full"),
                item_line_expr(unrated, group.columns).alias("__unrated"),
                item_line_expr(template.response_fields, group.columns).alias("__short"),
                field_exprs(group.columns)["Rating"].alias("__rating"),
            )
        )
    if not parts:
        return events
    return pl.concat(parts).sort("__row").drop("__row")


def iter_histories(rendered: pl.DataFrame) -> Iterator[UserHistory]:
    """Each (dataset, user) history of a rendered events frame, in frame order."""
    columns = ["source", "dataset", "user_id", "__noun", "__rating_pairs", "item_id", "__full", "__unrated"]
    columns += ["__short", "__rating"]
    for _, group in rendered.select(columns).group_by(list(USER), maintain_order=True):
        first = group.row(0)
        yield UserHistory(
            source=first[0],
            dataset=first[1],
            user_id=first[2],
            noun=first[3],
            rating_pairs=bool(first[4]),
            item_ids=group["item_id"].to_list(),
            full=[line or "" for line in group["__full"].to_list()],
            unrated=[line or "" for line in group["__unrated"].to_list()],
            short=[line or "" for line in group["__short"].to_list()],
            ratings=group["__rating"].to_list(),
        )


class PairMaker:
    """Cuts histories into windows and renders them as pairs, counting what it cannot use."""

    def __init__(self, params: InstructPairsParams, tokenizer: Path = DEFAULT_TOKENIZER):
        self.params = params
        self.drops = Drops()
        self.tokenizer = load_tokenizer(tokenizer)

    def pairs(self, history: UserHistory) -> Iterator[dict]:
        """Every pair of both tasks this history yields, oldest window first per task."""
        yield from self.task_pairs(history, NEXT_ITEM, history.short)
        if history.rating_pairs:
            yield from self.task_pairs(history, RATING, history.full)

    def task_pairs(self, history: UserHistory, task: str, all_lines: list[str]) -> Iterator[dict]:
        """The windows of one task over ``all_lines`` (events without the task's fields skipped)."""
        usable = [i for i, line in enumerate(all_lines) if line]
        if len(usable) < len(all_lines):
            self.drops.change(f"{task}:events_without_fields_skipped", len(all_lines) - len(usable))
        builders = [self.builder(history, task, i) for i in usable]
        if None in builders:
            self.drops.count(f"{task}:null_target_rating", builders.count(None))
        lines = [all_lines[i] for i in usable]
        cut = WindowCutter(lines, builders, self.tokenizer, self.params.max_tokens, self.params.min_history).cut()
        if cut.too_long:
            self.drops.count(f"{task}:too_long", cut.too_long)
        if len(cut.windows) > 1:
            self.drops.change(f"{task}:history_cut_to_fit", 1)
        windows = cut.windows
        limit = self.params.max_pairs_per_user
        if limit is not None and len(windows) > limit:
            self.drops.count(f"{task}:over_max_pairs_per_user", len(windows) - limit)
            windows = windows[-limit:]
        for window in windows:
            shown = [history.item_ids[i] for i in usable[window.start : window.target + 1]]
            yield {
                "prompt": window.pair.prompt,
                "response": window.pair.response,
                "task": task,
                "source": history.source,
                "dataset": history.dataset,
                "user_id": history.user_id,
                "item_id": shown[-1],
                "item_ids": shown,
                "num_items": len(shown),
                TARGET: window.target,
            }

    def builder(self, history: UserHistory, task: str, target: int) -> PairBuilder | None:
        """The pair builder for the event at ``target``; ``None`` for a rating target without a rating."""
        if task == NEXT_ITEM:
            return PairBuilder(NEXT_ITEM, history.noun, history.short[target])
        rating = history.ratings[target]
        if rating is None:
            return None
        return PairBuilder(RATING, history.noun, history.unrated[target], rating)


def choose(
    candidates: pl.DataFrame, params: InstructPairsParams, seed: int
) -> tuple[pl.DataFrame, Drops, dict[str, dict[str, dict[str, Any]]]]:
    """The configured number of pairs per source and task, by a seeded stable hash of each window
    (:mod:`recgpt_data.instruct.quota`); the windows left over, by reason; and per source and task
    the candidates, requested and kept."""
    if candidates.height == 0:
        return candidates, Drops(), {}
    chosen = first(ranked(drawn(candidates, seed)), params.count_for).drop(DRAW)
    totals = candidates.group_by(list(GROUP), maintain_order=True).len().rows()
    counts, drops = tally({(source, task): n for source, task, n in totals}, params.count_for)
    return chosen, drops, counts


@dataclass
class Pairs:
    """The ``instruct`` table, the windows left out (by reason) and values changed, and facts such
    as the pairs per source and task."""

    instruct: pl.DataFrame
    drops: Drops = field(default_factory=Drops)
    info: dict[str, Any] = field(default_factory=dict)


def candidate_pairs(
    interactions: pl.LazyFrame, items: pl.LazyFrame, params: InstructPairsParams, tokenizer: Path = DEFAULT_TOKENIZER
) -> Pairs:
    """Every window of ``interactions`` (already cut to the pool) that fits ``params.max_tokens``
    tokens of ``tokenizer``, as pairs with their target's index (:data:`~recgpt_data.instruct.quota.TARGET`),
    before any count is applied."""
    schema = {**INSTRUCT, TARGET: pl.Int64()}
    users = interactions.select(*USER).unique().sort(list(USER)).collect()
    if users.height == 0:
        return Pairs(pl.DataFrame(schema=schema))
    events = bucket_events(interactions, items, users)
    info: dict[str, Any] = {"events_without_item_row": events.without_item} if events.without_item else {}
    maker = PairMaker(params, tokenizer)
    rows = [pair for history in iter_histories(render_events(events.frame)) for pair in maker.pairs(history)]
    candidates = pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
    return Pairs(candidates, maker.drops, info)


def in_order(chosen: pl.DataFrame) -> pl.DataFrame:
    """The chosen pairs as the ``instruct`` table: by source, dataset, user and task, each user's
    newest window first, without their target's index."""
    order = ["source", "dataset", "user_id", "task", TARGET]
    return chosen.sort(order, descending=[False, False, False, False, True], maintain_order=True).drop(TARGET)


def build_pairs(
    interactions: pl.LazyFrame,
    items: pl.LazyFrame,
    params: InstructPairsParams,
    seed: int,
    tokenizer: Path = DEFAULT_TOKENIZER,
) -> Pairs:
    """The instruction pairs of ``interactions`` (already cut to the pool), as the ``instruct`` table,
    fitted to ``params.max_tokens`` tokens of ``tokenizer`` (a ``tokenizer.json``)."""
    found = candidate_pairs(interactions, items, params, tokenizer)
    chosen, left_over, counts = choose(found.instruct, params, seed)
    found.drops.update(left_over)
    if counts:
        found.info["pairs"] = counts
    return Pairs(in_order(chosen), found.drops, found.info)
