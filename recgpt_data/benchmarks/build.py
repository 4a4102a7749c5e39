"""The benchmark stages: build P5-protocol benchmarks from canonical tables (``p5_benchmark``) or load
P5's own split files (``load_p5``), write each under ``eval/<benchmark>/`` of the output folder, and
add their validation and test interactions to the ``held_out`` table.

``eval/<benchmark>/`` holds P5's ``sequential_data.txt`` and ``datamaps.json``, ``interactions.parquet``
(every interaction with raw and P5 ids, its position and both splits after the leak fix),
``items.parquet`` (the catalogue a harness matches generations against), ``prompts/<task>_<split>.jsonl``
and ``summary.json``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import polars as pl
from pydantic import Field, model_validator

from recgpt_data.benchmarks import HELD_OUT
from recgpt_data.benchmarks.p5 import (
    DATAMAPS_FILE,
    SEQUENTIAL_FILE,
    BenchmarkBuild,
    P5Split,
    build_benchmark,
    datamaps,
    fix_leaks,
    held_out_rows,
    load_p5,
    p5_events,
    sequential_text,
)
from recgpt_data.benchmarks.p5_ratings import (
    RATING_SPLITS_FILE,
    held_out_with_records,
    official_rating_split,
    read_rating_splits,
)
from recgpt_data.benchmarks.prompts import benchmark_prompts, catalogue, rendered_events
from recgpt_data.instruct.templates import MAX_TOKENS, TASKS
from recgpt_data.io.parquet import write_parquet, write_text
from recgpt_data.names import SafeName
from recgpt_data.pipeline.spec import resolve_path
from recgpt_data.sources import get_source
from recgpt_data.stage import Context, Params, StageOutput, StageStats, stage

OFFICIAL = "P5's official rating_splits_augmented.pkl"
REDRAWN = "redrawn here (seeded 80/10/10), not P5's: its rating_splits_augmented.pkl was not given"
NO_RATINGS = "none: P5's sequential files carry no ratings (no rating_splits_augmented.pkl beside them)"
EVENT_COLUMNS = (
    "user_id", "item_id", "user_index", "item_index", "position", "timestamp", "rating", "rating_max",
    "sequential_split", "rating_split",
)


def write_benchmark(
    folder: Path, split: P5Split, events: pl.DataFrame, items: pl.DataFrame | pl.LazyFrame, name: str,
    stats: StageStats, max_tokens: int, tokenizer: str | None, rating_split_from: str,
) -> dict:
    """Write one benchmark's files under ``folder``; returns its summary, which says where its
    rating split came from (``rating_split_from``)."""
    write_text(sequential_text(split), folder / SEQUENTIAL_FILE)
    write_text(json.dumps(datamaps(split), ensure_ascii=False) + "\n", folder / DATAMAPS_FILE)
    write_parquet(events.select([c for c in EVENT_COLUMNS if c in events.columns]), folder / "interactions.parquet")
    rendered = rendered_events(events, items)
    items_table = catalogue(rendered)
    write_parquet(items_table, folder / "items.parquet")
    prompts = benchmark_prompts(rendered, name, stats, max_tokens, tokenizer)
    counts: dict[str, int] = {}
    for task in TASKS:
        for split_name in ("validation", "test"):
            chosen = prompts.filter((pl.col("task") == task) & (pl.col("split") == split_name))
            lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in chosen.iter_rows(named=True))
            if chosen.height:
                write_text(lines, folder / "prompts" / f"{task}_{split_name}.jsonl")
            counts[f"{task}_{split_name}"] = chosen.height
    summary = {
        **{c: events[c][0] for c in ("source", "dataset") if c in events.columns},  # for the licence check
        "users": len(split.users),
        "items": len(split.items),
        "interactions": split.interactions,
        "items_without_text": int((items_table["line"] == "").sum()),
        "prompts": counts,
        "rating_split_from": rating_split_from,
    }
    for column in ("sequential_split", "rating_split"):
        if column in events.columns:
            summary[column] = dict(sorted(events[column].value_counts().iter_rows()))
    write_text(json.dumps(summary, indent=2) + "\n", folder / "summary.json")
    return summary


class BenchmarkSpec(Params):
    """One benchmark built from a dataset of the canonical tables."""

    name: SafeName  # folder under eval/, e.g. "beauty"
    dataset: str  # canonical dataset, e.g. "amazon2014/Beauty"
    k: int = Field(5, ge=1)
    start: datetime | None = None  # keep interactions at or after (P5's Yelp: 2019-01-01 00:00:00)
    end: datetime | None = None  # keep interactions before (P5's Yelp keeps <= 2019-12-31 00:00:00)
    rating_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # of a redrawn rating split
    rating_splits: str | None = None  # P5's rating_splits_augmented.pkl; without it, the split is redrawn


class P5BenchmarkParams(Params):
    benchmarks: list[BenchmarkSpec]
    max_tokens: int = Field(MAX_TOKENS, ge=16)
    tokenizer: str | None = None

    @model_validator(mode="after")
    def distinct_names(self) -> P5BenchmarkParams:
        names = [b.name for b in self.benchmarks]
        if len(set(names)) != len(names):
            raise ValueError("benchmark names must be distinct")
        return self


def benchmark_output(tables: dict, frames: list[pl.DataFrame], stats: StageStats, inner: StageStats) -> StageOutput:
    """A benchmark stage's output: the ``held_out`` table an earlier stage wrote (if any) followed by
    ``frames``; ``inner`` holds what the benchmarks left out of their own copies, which goes under
    ``info`` rather than among the stage's drops."""
    stats.info.update(inner.info)
    stats.info["left_out_of_benchmarks"] = dict(sorted(inner.dropped.items()))
    earlier = [tables["held_out"].lazy().collect().cast(HELD_OUT)] if "held_out" in tables else []
    held_out = pl.concat([pl.DataFrame(schema=HELD_OUT), *earlier, *frames])
    stats.rows_out["held_out"] = held_out.height
    return StageOutput({"held_out": held_out}, stats)


@stage(
    "p5_benchmark",
    params=P5BenchmarkParams,
    reads=("interactions", "items"),
    optional_reads=("held_out",),
    writes=("held_out",),
    version="3",
)
def p5_benchmark_stage(tables: dict, params: P5BenchmarkParams, ctx: Context) -> StageOutput:
    """Build each benchmark P5's way, write ``eval/<name>/`` and emit its held-out interactions.

    The rows a benchmark leaves out of its own copy of the data (k-core, leak fix, prompts that
    cannot be written) are not dropped from the corpus: they are counted under
    ``info["left_out_of_benchmarks"]``, not as the stage's drops."""
    stats, inner = StageStats(), StageStats()
    frames = []
    for spec in params.benchmarks:
        path = resolve_path(spec.rating_splits, ctx.spec_dir) if spec.rating_splits else None
        official = read_rating_splits(path) if path is not None and path.is_file() else None
        if path is not None and official is None:
            stats.info.setdefault("warnings", []).append(f"{spec.name}: no {path}; rating split redrawn")
        built: BenchmarkBuild = build_benchmark(
            tables["interactions"], spec.dataset, inner, spec.k, spec.start, spec.end, ctx.seed, spec.rating_fractions,
            official.records if official else None,
        )
        items = tables["items"].lazy().filter(pl.col("dataset") == spec.dataset)
        stats.info[spec.name] = write_benchmark(
            ctx.out_dir / "eval" / spec.name, built.split, built.events, items, spec.name, inner,
            params.max_tokens, params.tokenizer, OFFICIAL if official else REDRAWN,
        )
        held = held_out_rows(built.events, spec.name, spec.dataset)
        if official:
            stats.info[spec.name]["official_reviews"] = {**official.counts(), **built.rating_matches}
            held = held_out_with_records(held, official.records, spec.name, spec.dataset)
        frames.append(held)
    return benchmark_output(tables, frames, stats, inner)


class P5Files(Params):
    """One of P5's own splits: its folder and the canonical dataset its raw ids belong to."""

    name: SafeName  # folder under eval/
    dataset: str  # e.g. "amazon2014/Beauty": where item text for prompts is looked up
    path: str


class LoadP5Params(Params):
    benchmarks: list[P5Files]
    max_tokens: int = Field(MAX_TOKENS, ge=16)
    tokenizer: str | None = None


@stage(
    "load_p5", params=LoadP5Params, reads=("items",), optional_reads=("held_out",), writes=("held_out",), version="3"
)
def load_p5_stage(tables: dict, params: LoadP5Params, ctx: Context) -> StageOutput:
    """Load P5's own split files, write ``eval/<name>/`` with next-item prompts, and rating prompts
    where P5's ``rating_splits_augmented.pkl`` lies beside them, and emit the held-out interactions
    (each user's last two items, and the rating split's validation and test reviews); prompts that
    cannot be written are counted under ``info["left_out_of_benchmarks"]``."""
    stats, inner = StageStats(), StageStats()
    frames = []
    for spec in params.benchmarks:
        path = resolve_path(spec.path, ctx.spec_dir)
        split = load_p5(path)
        official = read_rating_splits(path / RATING_SPLITS_FILE) if (path / RATING_SPLITS_FILE).is_file() else None
        folder = ctx.out_dir / "eval" / spec.name
        items = tables["items"].lazy().filter(pl.col("dataset") == spec.dataset)
        source = items.select("source").head(1).collect()["source"].to_list()
        stats.rows_in[spec.name] = split.interactions
        events, matches = p5_events(split), {}
        if official:
            events, matches = official_rating_split(events, official.records)
            scale = get_source(source[0]).rating_max if source else None
            events = fix_leaks(events.with_columns(pl.lit(scale, pl.Float64).alias("rating_max")), inner)
        if source:
            events = events.with_columns(pl.lit(source[0]).alias("source"), pl.lit(spec.dataset).alias("dataset"))
            stats.info[spec.name] = write_benchmark(
                folder, split, events, items, spec.name, inner, params.max_tokens, params.tokenizer,
                OFFICIAL if official else NO_RATINGS,
            )
        else:
            write_text(sequential_text(split), folder / SEQUENTIAL_FILE)
            write_text(json.dumps(datamaps(split), ensure_ascii=False) + "\n", folder / DATAMAPS_FILE)
            stats.info[spec.name] = {"users": len(split.users), "items": len(split.items),
                                     "interactions": split.interactions}
            stats.info.setdefault("warnings", []).append(f"{spec.name}: no items of {spec.dataset}; no prompts")
        held = held_out_rows(events, spec.name, spec.dataset)
        if official:
            stats.info[spec.name]["official_reviews"] = {**official.counts(), **matches}
            held = held_out_with_records(held, official.records, spec.name, spec.dataset)
        frames.append(held)
    return benchmark_output(tables, frames, stats, inner)
