"""Stage ``load_p5``: P5's own split files loaded, written under ``eval/<name>/`` with prompts, their
held-out interactions emitted (:mod:`recgpt_data.p5`)."""

from __future__ import annotations

import json
from collections.abc import Mapping

import polars as pl
from pydantic import Field

from recgpt_data.instruct.templates import MAX_TOKENS
from recgpt_data.io.parquet import write_text
from recgpt_data.names import SafeName
from recgpt_data.p5.build import NO_RATINGS, OFFICIAL, benchmark_output, write_benchmark
from recgpt_data.p5.ratings import (
    RATING_SPLITS_FILE,
    held_out_with_records,
    official_rating_split,
    read_rating_splits,
)
from recgpt_data.p5.splits import (
    DATAMAPS_FILE,
    SEQUENTIAL_FILE,
    datamaps,
    fix_leaks,
    held_out_rows,
    load_p5,
    p5_events,
    sequential_text,
)
from recgpt_data.pipeline.spec import resolve_path
from recgpt_data.sources import get_source
from recgpt_data.stage import Context, Drops, Params, RawPath, StageOutput, StageStats, stage


class P5Files(Params):
    """One of P5's own splits: its folder and the canonical dataset its raw ids belong to."""

    name: SafeName  # folder under eval/
    dataset: str  # e.g. "amazon2014/Beauty": where item text for prompts is looked up
    path: RawPath


class LoadP5Params(Params):
    """P5's splits to load, and the prompt budget (in tokens of the spec's tokenizer)."""

    benchmarks: list[P5Files]
    max_tokens: int = Field(MAX_TOKENS, ge=16)


@stage(
    "load_p5",
    params=LoadP5Params,
    reads=("items",),
    optional_reads=("held_out",),
    writes=("held_out",),
    settings=("tokenizer",),
    version="3",
)
def load_p5_stage(tables: Mapping[str, pl.LazyFrame], params: LoadP5Params, ctx: Context) -> StageOutput:
    """Load P5's own split files, write ``eval/<name>/`` with next-item prompts, and rating prompts
    where P5's ``rating_splits_augmented.pkl`` lies beside them, and emit the held-out interactions
    (each user's last two items, and the rating split's validation and test reviews); prompts that
    cannot be written are counted under ``info["left_out_of_benchmarks"]``."""
    stats, left_out = StageStats(), Drops()
    frames = []
    for spec in params.benchmarks:
        path = resolve_path(spec.path, ctx.spec_dir)
        split = load_p5(path)
        official = read_rating_splits(path / RATING_SPLITS_FILE) if (path / RATING_SPLITS_FILE).is_file() else None
        folder = ctx.out_dir / "eval" / spec.name
        items = tables["items"].filter(pl.col("dataset") == spec.dataset)
        source = items.select("source").head(1).collect()["source"].to_list()
        stats.rows_in[spec.name] = split.interactions
        events, matches = p5_events(split), {}
        if official:
            events, matches = official_rating_split(events, official.records)
            scale = get_source(source[0]).rating_max if source else None
            events, leaks = fix_leaks(events.with_columns(pl.lit(scale, pl.Float64).alias("rating_max")))
            left_out.update(leaks)
        if source:
            events = events.with_columns(pl.lit(source[0]).alias("source"), pl.lit(spec.dataset).alias("dataset"))
            stats.info[spec.name], unwritten = write_benchmark(
                folder,
                split,
                events,
                items,
                spec.name,
                params.max_tokens,
                ctx.tokenizer,
                OFFICIAL if official else NO_RATINGS,
            )
            left_out.update(unwritten)
        else:
            write_text(sequential_text(split), folder / SEQUENTIAL_FILE)
            write_text(json.dumps(datamaps(split), ensure_ascii=False) + "\n", folder / DATAMAPS_FILE)
            stats.info[spec.name] = {
                "users": len(split.users),
                "items": len(split.items),
                "interactions": split.interactions,
            }
            stats.info.setdefault("warnings", []).append(f"{spec.name}: no items of {spec.dataset}; no prompts")
        held = held_out_rows(events, spec.name, spec.dataset)
        if official:
            stats.info[spec.name]["official_reviews"] = {**official.counts(), **matches}
            held = held_out_with_records(held, official.records, spec.name, spec.dataset)
        frames.append(held)
    return benchmark_output(tables, frames, stats, left_out)
