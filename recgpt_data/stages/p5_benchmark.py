"""Stage ``p5_benchmark``: benchmarks built P5's way from the canonical tables, written under
``eval/<name>/``, their held-out interactions emitted (:mod:`recgpt_data.p5`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import polars as pl
from pydantic import Field, model_validator

from recgpt_data.instruct.templates import MAX_TOKENS
from recgpt_data.names import SafeName
from recgpt_data.p5.build import OFFICIAL, REDRAWN, benchmark_output, write_benchmark
from recgpt_data.p5.ratings import held_out_with_records, read_rating_splits
from recgpt_data.p5.splits import build_benchmark, held_out_rows
from recgpt_data.pipeline.spec import resolve_path
from recgpt_data.stage import Context, Drops, Params, RawPath, StageOutput, StageStats, stage


class BenchmarkSpec(Params):
    """One benchmark built from a dataset of the canonical tables."""

    name: SafeName  # folder under eval/, e.g. "beauty"
    dataset: str  # canonical dataset, e.g. "amazon2014/Beauty"
    k: int = Field(5, ge=1)
    start: datetime | None = None  # keep interactions at or after (P5's Yelp: 2019-01-01 00:00:00)
    end: datetime | None = None  # keep interactions before (P5's Yelp keeps <= 2019-12-31 00:00:00)
    rating_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # of a redrawn rating split
    rating_splits: RawPath | None = None  # P5's rating_splits_augmented.pkl; without it, the split is redrawn


class P5BenchmarkParams(Params):
    """The benchmarks to build, and the prompt budget (in tokens of the spec's tokenizer)."""

    benchmarks: list[BenchmarkSpec]
    max_tokens: int = Field(MAX_TOKENS, ge=16)

    @model_validator(mode="after")
    def distinct_names(self) -> P5BenchmarkParams:
        names = [b.name for b in self.benchmarks]
        if len(set(names)) != len(names):
            raise ValueError("benchmark names must be distinct")
        return self

    def datasets_needed(self) -> tuple[str, ...]:
        return tuple(b.dataset for b in self.benchmarks)


@stage(
    "p5_benchmark",
    params=P5BenchmarkParams,
    reads=("interactions", "items"),
    optional_reads=("held_out",),
    writes=("held_out",),
    settings=("tokenizer",),
    version="3",
)
def p5_benchmark_stage(tables: Mapping[str, pl.LazyFrame], params: P5BenchmarkParams, ctx: Context) -> StageOutput:
    """Build each benchmark P5's way, write ``eval/<name>/`` and emit its held-out interactions.

    The rows a benchmark leaves out of its own copy of the data (k-core, leak fix, prompts that
    cannot be written) are not dropped from the corpus: they are counted under
    ``info["left_out_of_benchmarks"]``, not as the stage's drops."""
    stats, left_out = StageStats(), Drops()
    frames = []
    for spec in params.benchmarks:
        path = resolve_path(spec.rating_splits, ctx.spec_dir) if spec.rating_splits else None
        official = read_rating_splits(path) if path is not None and path.is_file() else None
        if path is not None and official is None:
            stats.info.setdefault("warnings", []).append(f"{spec.name}: no {path}; rating split redrawn")
        built = build_benchmark(
            tables["interactions"],
            spec.dataset,
            spec.k,
            spec.start,
            spec.end,
            ctx.seed,
            spec.rating_fractions,
            official.records if official else None,
        )
        left_out.update(built.left_out)
        stats.info["kcore_rounds"] = built.kcore_rounds
        items = tables["items"].filter(pl.col("dataset") == spec.dataset)
        stats.info[spec.name], unwritten = write_benchmark(
            ctx.out_dir / "eval" / spec.name,
            built.split,
            built.events,
            items,
            spec.name,
            params.max_tokens,
            ctx.tokenizer,
            OFFICIAL if official else REDRAWN,
        )
        left_out.update(unwritten)
        held = held_out_rows(built.events, spec.name, spec.dataset)
        if official:
            stats.info[spec.name]["official_reviews"] = {**official.counts(), **built.rating_matches}
            held = held_out_with_records(held, official.records, spec.name, spec.dataset)
        frames.append(held)
    return benchmark_output(tables, frames, stats, left_out)
