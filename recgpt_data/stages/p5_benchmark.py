"""Stage ``p5_benchmark``: benchmarks built P5's way from the canonical tables, written under
``eval/<name>/``, their held-out interactions emitted (:mod:`recgpt_data.p5`). The benchmarks are
built in the prepare step's tasks (:mod:`recgpt_data.p5.tasks`), each reading only its dataset; they
pass their files through the step's task folders (the store's, with the output in object storage),
so they run on any node."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

import polars as pl
from pydantic import Field, model_validator

from recgpt_data.instruct.templates import MAX_TOKENS
from recgpt_data.io.storage import join, remove_tree
from recgpt_data.names import SafeName
from recgpt_data.p5 import tasks
from recgpt_data.p5.build import benchmark_output
from recgpt_data.p5.tasks import BenchmarkJob, ChunkDone, ChunkJob, FinishJob, build, finish, prompt_chunk
from recgpt_data.pipeline.spec import resolve_path
from recgpt_data.stage import Context, Drops, Params, Preparation, Prepared, RawPath, StageOutput, StageStats, stage

BENCHMARK_HELD_OUT = "p5_benchmark_held_out"  # the prepare step's tables the stage function reads
BENCHMARK_RECORDS = "p5_benchmark_records"


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


def prepare_p5(prep: Preparation, params: P5BenchmarkParams, ctx: Context) -> Prepared:
    """Build and write the benchmarks in tasks (:mod:`recgpt_data.p5.tasks`): one per benchmark, then
    one per chunk of a benchmark's users for its prompts, then one per benchmark to finish its
    folder; the driver only plans. The stage function reads their held-out rows and records.
    The tasks write in the step's task folders: its scratch, and ``eval/<name>/`` of its folder for
    final-folder files (the store's prefixes of the stage's attempt, where it is lent them)."""
    folders = prep.task_folders(ctx)
    scratch = join(folders.scratch, "p5_benchmark")
    remove_tree(scratch)  # what an interrupted attempt left
    jobs = []
    for index, spec in enumerate(params.benchmarks):
        path = resolve_path(spec.rating_splits, ctx.spec_dir) if spec.rating_splits else None
        present = path is not None and path.is_file()
        jobs.append(
            BenchmarkJob(
                name=spec.name,
                dataset=spec.dataset,
                k=spec.k,
                start=spec.start,
                end=spec.end,
                fractions=spec.rating_fractions,
                rating_splits=path if present else None,
                warning=f"{spec.name}: no {path}; rating split redrawn" if path is not None and not present else None,
                seed=ctx.seed,
                max_tokens=params.max_tokens,
                tokenizer=ctx.tokenizer,
                interactions=prep.buckets["interactions"][0],
                items=prep.buckets["items"][0],
                folder=str(join(folders.out_dir, f"eval/{spec.name}")),
                scratch=str(join(scratch, f"{index:03d}")),
                chunk_rows=tasks.CHUNK_ROWS,
            )
        )
    built = {done.name: done for done in prep.map(build, jobs)}  # results come in any order
    chunks = [
        ChunkJob(job, number, offset, rows)
        for job in jobs
        for number, (offset, rows) in enumerate(built[job.name].chunks)
    ]
    done: dict[str, list[ChunkDone]] = {job.name: [] for job in jobs}
    for chunk in prep.map(prompt_chunk, chunks):
        done[chunk.name].append(chunk)
    finishing = [FinishJob(job, built[job.name], tuple(sorted(done[job.name], key=lambda c: c.number))) for job in jobs]
    list(prep.map(finish, finishing))
    return Prepared(
        {
            BENCHMARK_HELD_OUT: tuple(str(job.file("held_out")) for job in jobs),
            BENCHMARK_RECORDS: tuple(str(job.file("record")) for job in jobs),
        }
    )


@stage(
    "p5_benchmark",
    params=P5BenchmarkParams,
    reads=("interactions", "items"),
    optional_reads=("held_out",),
    writes=("held_out",),
    settings=("tokenizer",),
    version="4",
    prepare=prepare_p5,
    prepare_anywhere=True,
)
def p5_benchmark_stage(tables: Mapping[str, pl.LazyFrame], params: P5BenchmarkParams, ctx: Context) -> StageOutput:
    """The benchmarks' held-out interactions after any an earlier stage wrote, and their stats, from
    what the prepare step's tasks wrote (each benchmark built P5's way under ``eval/<name>/``).

    The rows a benchmark leaves out of its own copy of the data (k-core, leak fix, prompts that
    cannot be written) are not dropped from the corpus: they are counted under
    ``info["left_out_of_benchmarks"]``, not as the stage's drops."""
    stats, left_out = StageStats(), Drops()
    for name, text in tables[BENCHMARK_RECORDS].collect().iter_rows():
        record = json.loads(text)
        if record["warning"]:
            stats.info.setdefault("warnings", []).append(record["warning"])
        stats.info["kcore_rounds"] = record["kcore_rounds"]
        stats.info[name] = record["summary"]
        for reason, n in record["left_out"].items():
            left_out.count(reason, n)
    return benchmark_output(tables, [tables[BENCHMARK_HELD_OUT].collect()], stats, left_out)
