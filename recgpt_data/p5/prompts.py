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

from pathlib import Path

import polars as pl
from tokenizers import Tokenizer

from recgpt_data.histories import unique_items
from recgpt_data.instruct.pairs import render_events
from recgpt_data.instruct.templates import (
    MAX_TOKENS,
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
from recgpt_data.tokenizer import DEFAULT_TOKENIZER, load_tokenizer

PROMPTS: dict[str, pl.DataType] = {
    "benchmark": pl.String(),
    "task": pl.String(),
    "split": pl.String(),
    "user_id": pl.String(),
    "item_id": pl.String(),
    "user_index": pl.Int64(),
    "item_index": pl.Int64(),
    "prompt": pl.String(),
    "response": pl.String(),
    "target_rating": pl.Float64(),
    "rating_max": pl.Float64(),
    "seen_item_ids": pl.List(pl.String()),
    "num_history": pl.Int64(),
}
CATALOGUE: dict[str, pl.DataType] = {"item_index": pl.Int64(), "item_id": pl.String(), "line": pl.String()}
EVENT_COLUMNS = ("source", "dataset", "user_id", "item_id", "rating", "rating_max", "review_text")


def rendered_events(events: pl.DataFrame, items: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """A benchmark's events (in user, position order) joined with their items and rendered."""
    present = set(events.columns)
    extra = [pl.lit(None, pl.Float64).alias(c) for c in ("rating", "rating_max") if c not in present]
    extra += [pl.lit(None, pl.String).alias("review_text")] if "review_text" not in present else []
    joined = events.with_columns(extra).join(
        unique_items(items).collect(), on=["dataset", "item_id"], how="left", maintain_order="left"
    )
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


def benchmark_prompts(
    rendered: pl.DataFrame,
    benchmark: str,
    max_tokens: int = MAX_TOKENS,
    tokenizer: Path = DEFAULT_TOKENIZER,
) -> tuple[pl.DataFrame, Drops]:
    """Next-item prompts (sequential validation and test) and rating prompts (rating validation and
    test) of a rendered benchmark, in user then position order; and the prompts it could not write,
    by reason."""
    encoder = load_tokenizer(tokenizer)
    left_out = Drops()
    rows: list[dict] = []
    has_ratings = "rating_split" in rendered.columns
    columns = [
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
    columns += ["rating_split"] if has_ratings else []
    for _, user in rendered.select(columns).group_by("user_index", maintain_order=True):
        events = user.to_dicts()
        rows.extend(next_item_prompts(events, benchmark, encoder, max_tokens, left_out))
        if has_ratings and events[0]["__rating_pairs"]:
            rows.extend(rating_prompts(events, benchmark, encoder, max_tokens, left_out))
    prompts = pl.DataFrame(rows, schema=PROMPTS, orient="row") if rows else pl.DataFrame(schema=PROMPTS)
    return prompts, left_out


def next_item_prompts(
    events: list[dict], benchmark: str, encoder: Tokenizer, max_tokens: int, left_out: Drops
) -> list[dict]:
    """The sequential validation and test prompts of one user's events; those it cannot write are
    counted in ``left_out``."""
    rows = []
    costs = line_costs(encoder, [e["__short"] or "" for e in events])
    for position, event in enumerate(events):
        if event["sequential_split"] not in (VALIDATION, TEST):
            continue
        if not event["__short"]:
            left_out.count(f"{NEXT_ITEM}:target_without_fields", 1)
            continue
        before = events[:position]
        shown = [i for i, e in enumerate(before) if e["__short"]]
        builder = PairBuilder(NEXT_ITEM, event["__noun"], event["__short"])
        lines = [before[i]["__short"] for i in shown]
        fitted = fit_lines(builder, lines, encoder, max_tokens, [costs[i] for i in shown])
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
    costs = line_costs(encoder, [e["__full"] or "" for e in events])
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
        lines = [before[i]["__full"] for i in shown]
        fitted = (
            fit_lines(builder, lines, encoder, max_tokens, [costs[i] for i in shown])
            if lines
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
    """One prompt record: ids, the pair, the target rating and the items seen before the target."""
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
