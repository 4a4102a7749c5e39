"""Test and validation prompts of a benchmark, in the same templates as the instruction pairs.

- **next item**: a user's items before the evaluated one (response fields only), most recent kept
  to fit the token budget; the response is the evaluated item's line.
- **rating**: the user's earlier items whose ratings are not themselves evaluated (full fields),
  then the evaluated item with its rating removed (``...; Rating:``); the response is its rating.

Each prompt row keeps the raw and P5 ids, the target rating and every item the user saw before the
target (the harness drops those from next-item candidates). The item catalogue (every benchmark item
with its response-fields line) is what generations are matched against.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import polars as pl
from tokenizers import Tokenizer

from recgpt_data.histories import unique_items
from recgpt_data.instruct.pairs import render_events
from recgpt_data.instruct.templates import (
    NEXT_ITEM,
    RATING,
    Pair,
    PairBuilder,
    fit_lines,
    line_costs,
    token_count,
)
from recgpt_data.p5.splits import TEST, VALIDATION
from recgpt_data.stage import Drops

CATALOGUE: dict[str, pl.DataType] = {"item_index": pl.Int64(), "item_id": pl.String(), "line": pl.String()}
EVENT_COLUMNS = ("source", "dataset", "user_id", "item_id", "rating", "rating_max", "review_text")


def benchmark_items(events: pl.DataFrame, items: pl.LazyFrame) -> pl.DataFrame:
    """The item rows a benchmark's events render (:func:`~recgpt_data.histories.unique_items` of
    the items they name): only those are read into memory."""
    return unique_items(items, events.select("dataset", "item_id").unique()).collect()


def rendered_events(events: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """A benchmark's events (in user, position order) joined with their items
    (:func:`benchmark_items`) and rendered."""
    present = set(events.columns)
    extra = [pl.lit(None, pl.Float64).alias(c) for c in ("rating", "rating_max") if c not in present]
    extra += [pl.lit(None, pl.String).alias("review_text")] if "review_text" not in present else []
    joined = events.with_columns(extra).join(items, on=["dataset", "item_id"], how="left", maintain_order="left")
    return render_events(joined)


def catalogue(rendered: pl.DataFrame) -> pl.DataFrame:
    """Every benchmark item once, by P5 number, with its response-fields line (empty where the item
    has no metadata)."""
    return (
        rendered.select("item_index", "item_id", pl.col("__short").fill_null("").alias("line"))
        .unique("item_index", keep="first")
        .sort("item_index")
        .cast(CATALOGUE)
    )


CHUNK_ROWS = 50_000  # events rendered and prompted at a time (whole users), bounding the rendered lines held


def user_chunks(events: pl.DataFrame, rows: int = CHUNK_ROWS) -> Iterator[pl.DataFrame]:
    """``events`` (each user's rows together, in user then position order) in slices of whole
    users of about ``rows`` rows each."""
    start = end = 0
    for length in events["user_index"].rle().struct.field("len").to_list():
        end += length
        if end - start >= rows:
            yield events.slice(start, end - start)
            start = end
    if end > start:
        yield events.slice(start, end - start)


class HistoryCosts(Sequence[int]):
    """The token costs (:func:`~recgpt_data.instruct.templates.line_costs`) of a history: ``lines[i]``
    for each ``i`` of ``shown``. A cost is encoded when first read, with the costs just before it in
    one batch (growing, latest lines first), into ``cache`` (line index -> cost, shared by one user's
    prompts of a task): a prompt's budget reads only the latest lines of a long history, so the lines
    it never reaches are never encoded."""

    def __init__(self, encoder: Tokenizer, lines: list[str], shown: list[int], cache: dict[int, int]):
        self.encoder, self.lines, self.shown, self.cache = encoder, lines, shown, cache
        self.batch = 8

    def __len__(self) -> int:
        return len(self.shown)

    def __getitem__(self, k: int) -> int:  # type: ignore[override]
        line = self.shown[k]
        if line not in self.cache:
            k %= len(self.shown)
            missing = [i for i in self.shown[max(0, k - self.batch + 1) : k + 1] if i not in self.cache]
            self.cache.update(zip(missing, line_costs(self.encoder, [self.lines[i] for i in missing]), strict=True))
            self.batch *= 2
        return self.cache[line]


PROMPT_COLUMNS = [
    "user_id",
    "user_index",
    "item_id",
    "item_index",
    "sequential_split",
    "__short",
    "__full",
    "__unrated",
    "__rating",
    "__noun",
    "__rating_pairs",
    "rating",
    "rating_max",
]


def benchmark_prompts(
    rendered: pl.DataFrame, benchmark: str, encoder: Tokenizer, max_tokens: int, left_out: Drops
) -> Iterator[dict]:
    """Next-item prompts (sequential validation and test) and rating prompts (rating validation and
    test) of rendered events (each user's rows together, in user then position order), as
    :data:`PROMPTS` records, user by user; the prompts it cannot write are counted in ``left_out``."""
    has_ratings = "rating_split" in rendered.columns
    events = rendered.select(PROMPT_COLUMNS + (["rating_split"] if has_ratings else [])).to_dicts()
    start = 0
    for length in rendered["user_index"].rle().struct.field("len").to_list():
        user = events[start : start + length]
        start += length
        yield from next_item_prompts(user, benchmark, encoder, max_tokens, left_out)
        if has_ratings and user[0]["__rating_pairs"]:
            yield from rating_prompts(user, benchmark, encoder, max_tokens, left_out)


def next_item_prompts(
    events: list[dict], benchmark: str, encoder: Tokenizer, max_tokens: int, left_out: Drops
) -> list[dict]:
    """The sequential validation and test prompts of one user's events; those it cannot write are
    counted in ``left_out``."""
    rows = []
    lines, cache = [e["__short"] or "" for e in events], {}
    for position, event in enumerate(events):
        if event["sequential_split"] not in (VALIDATION, TEST):
            continue
        if not event["__short"]:
            left_out.count(f"{NEXT_ITEM}:target_without_fields", 1)
            continue
        before = events[:position]
        shown = [i for i, e in enumerate(before) if e["__short"]]
        builder = PairBuilder(NEXT_ITEM, event["__noun"], event["__short"])
        costs = HistoryCosts(encoder, lines, shown, cache)
        fitted = fit_lines(builder, [lines[i] for i in shown], encoder, max_tokens, costs)
        if fitted is None:
            left_out.count(f"{NEXT_ITEM}:no_history", 1)
            continue
        pair, kept = fitted
        rows.append(prompt_row(benchmark, NEXT_ITEM, event["sequential_split"], event, pair, kept, before))
    return rows


def rating_prompts(
    events: list[dict], benchmark: str, encoder: Tokenizer, max_tokens: int, left_out: Drops
) -> list[dict]:
    """The rating validation and test prompts of one user's events; those it cannot write are
    counted in ``left_out``."""
    rows = []
    lines, cache = [e["__full"] or "" for e in events], {}
    for position, event in enumerate(events):
        split = event["rating_split"]
        if split not in (VALIDATION, TEST):
            continue
        if event["__rating"] is None:
            left_out.count(f"{RATING}:target_without_rating", 1)
            continue
        before = events[:position]
        shown = [i for i, e in enumerate(before) if e["__full"] and e["rating_split"] not in (VALIDATION, TEST)]
        builder = PairBuilder(RATING, event["__noun"], event["__unrated"] or "", event["__rating"])
        costs = HistoryCosts(encoder, lines, shown, cache)
        fitted = (
            fit_lines(builder, [lines[i] for i in shown], encoder, max_tokens, costs)
            if shown
            else alone(builder, encoder, max_tokens)
        )
        if fitted is None:
            left_out.count(f"{RATING}:too_long", 1)
            continue
        pair, kept = fitted
        rows.append(prompt_row(benchmark, RATING, split, event, pair, kept, before))
    return rows


def alone(builder: PairBuilder, encoder: Tokenizer, max_tokens: int) -> tuple[Pair, int] | None:
    """A rating pair with no earlier item: only the rated one, if it fits."""
    pair = builder([])
    return (pair, 0) if token_count(encoder, pair.prompt, pair.response) <= max_tokens else None


def prompt_row(benchmark: str, task: str, split: str, event: dict, pair: Pair, kept: int, before: list[dict]) -> dict:
    """One prompt record: ids (raw and P5's), the pair, the target rating (float; none for next-item
    prompts), the rating scale, the items seen before the target and how many history lines it kept."""
    return {
        "benchmark": benchmark,
        "task": task,
        "split": split,
        "user_id": event["user_id"],
        "item_id": event["item_id"],
        "user_index": event["user_index"],
        "item_index": event["item_index"],
        "prompt": pair.prompt,
        "response": pair.response,
        "target_rating": event["rating"] if task == RATING else None,
        "rating_max": event["rating_max"],
        "seen_item_ids": [e["item_id"] for e in before],
        "num_history": kept,
    }
