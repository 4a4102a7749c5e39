"""The ``p5_benchmark`` stage's work as tasks on the run's engine, in three rounds:

1. :func:`build` (a task per benchmark): reads only its dataset's interactions (the filter pushed
   into the parquet scan) without their long texts (:data:`DEFERRED`), builds the benchmark
   (k-core, numbering, splits, leak fix), writes P5's split files and ``interactions.parquet`` and,
   in its scratch folder, its held-out rows, its events, the texts of the events it kept (streamed
   from the input, never held), the item rows they render, and cuts its users into chunks of whole
   users; so it holds its dataset's rows whole, but not their texts;
2. :func:`prompt_chunk` (a task per chunk): takes its events' texts back, renders them and writes
   their prompts and catalogue lines into the chunk's scratch folder;
3. :func:`finish` (a task per benchmark): joins its chunks' prompt files in chunk order into
   ``prompts/``, writes the item catalogue and ``summary.json``, and its record for the stage's stats.

The files are the bytes one process writing the benchmark alone would write
(:func:`~recgpt_data.p5.build.write_benchmark`): prompts are made user by user and each chunk is
whole users in order, so the joined files hold the same lines in the same order.

A job's folders are local paths or, with the output in object storage, the store's URLs: a task
reads what earlier tasks wrote there and writes its files in a local folder that is uploaded whole
when it ends (:func:`~recgpt_data.io.storage.local_folder`), so tasks run on any node.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from recgpt_data.io.atomic import AtomicTextWriter
from recgpt_data.io.parquet import AtomicParquetWriter, write_parquet
from recgpt_data.io.storage import Location, fetched, join, local_folder, location_of
from recgpt_data.p5.build import (
    OFFICIAL,
    PROMPT_FILES,
    PROMPTS_FOLDER,
    REDRAWN,
    SplitSummary,
    split_summary,
    write_prompts,
    write_split_files,
    write_summary,
)
from recgpt_data.p5.prompts import benchmark_items, user_chunks
from recgpt_data.p5.ratings import held_out_with_records, read_rating_splits
from recgpt_data.p5.splits import build_benchmark, held_out_rows
from recgpt_data.tokenizer import load_tokenizer

CHUNK_ROWS = 25_000  # a job's ``chunk_rows`` in a run
EVENTS_ROW_GROUP = 8_192  # row groups of the scratch events, so that a chunk reads little beyond its rows
DEFERRED = ("review_title", "review_text", "extras")  # long texts the build never reads: the prompt tasks fetch them
TEXT_BATCH = 65_536  # input rows read at a time for their texts
INPUT_ROW = "__input_row"  # a row's number in the interactions' files, which finds its deferred texts
RECORD: dict[str, pl.DataType] = {"benchmark": pl.String(), "record": pl.String()}  # the stage reads these


@dataclass(frozen=True)
class BenchmarkJob:
    """One benchmark of the stage: its parameters, the input tables' files, its folder under
    ``eval/`` and its scratch folder (local paths or the store's URLs)."""

    name: str
    dataset: str
    k: int
    start: datetime | None
    end: datetime | None
    fractions: tuple[float, float, float]
    rating_splits: Path | None  # P5's rating split file, where given and present
    warning: str | None  # why the rating split is redrawn though a file was named
    seed: int
    max_tokens: int
    tokenizer: Path
    interactions: tuple[str, ...]
    items: tuple[str, ...]
    folder: str
    scratch: str
    chunk_rows: int  # events of one prompt task (whole users)

    def file(self, name: str) -> Location:
        """Its scratch file ``name``: ``events``, ``texts`` (theirs of :data:`DEFERRED`), ``items``
        (the item rows they render), ``held_out`` or ``record``."""
        return join(location_of(self.scratch), scratch_name(name))

    def chunk_folder(self, number: int) -> Location:
        return join(location_of(self.scratch), f"chunk-{number:05d}")


def scratch_name(name: str) -> str:
    """The name of a benchmark's scratch file ``name`` in its scratch folder."""
    return f"{name}.parquet"


@dataclass(frozen=True)
class Built:
    """What :func:`build` hands the later rounds: the benchmark, its summary of the split, the k-core's rounds,
    what it left out by reason, how P5's official reviews matched (or ``None``), and its chunks
    (``(offset, rows)`` of the scratch events)."""

    name: str
    split: SplitSummary
    kcore_rounds: int
    left_out: dict[str, int]
    official_reviews: dict[str, int] | None
    chunks: tuple[tuple[int, int], ...]


def build(job: BenchmarkJob) -> Built:
    """Round 1 for one benchmark (see the module docstring)."""
    official = read_rating_splits(job.rating_splits) if job.rating_splits is not None else None
    rows = pl.scan_parquet(list(job.interactions), row_index_name=INPUT_ROW).filter(pl.col("dataset") == job.dataset)
    schema = rows.collect_schema()
    deferred = [c for c in DEFERRED if c in schema]
    built = build_benchmark(
        rows.with_columns(pl.lit(None, schema[c]).alias(c) for c in deferred),
        job.dataset,
        job.k,
        job.start,
        job.end,
        job.seed,
        job.fractions,
        official.records if official else None,
    )
    events = built.events
    with local_folder(location_of(job.folder)) as folder, local_folder(location_of(job.scratch)) as scratch:
        write_texts(job, rows.select(INPUT_ROW, *deferred), built.events[INPUT_ROW], scratch / scratch_name("texts"))
        write_split_files(folder, built.split, events)
        held = held_out_rows(events, job.name, job.dataset)
        if official:
            held = held_out_with_records(held, official.records, job.name, job.dataset)
        write_parquet(held, scratch / scratch_name("held_out"))
        items = pl.scan_parquet(list(job.items)).filter(pl.col("dataset") == job.dataset)
        write_parquet(benchmark_items(events, items), scratch / scratch_name("items"))
        write_parquet(events, scratch / scratch_name("events"), row_group_size=EVENTS_ROW_GROUP)
    chunks, offset = [], 0
    for chunk in user_chunks(events, job.chunk_rows):
        chunks.append((offset, chunk.height))
        offset += chunk.height
    return Built(
        job.name,
        split_summary(built.split, events),
        built.kcore_rounds,
        dict(built.left_out.dropped),
        {**official.counts(), **built.rating_matches} if official else None,
        tuple(chunks),
    )


def write_texts(job: BenchmarkJob, texts: pl.LazyFrame, kept: pl.Series, path: Path) -> None:
    """Write the deferred texts (``texts``: the dataset's rows of the input) of the ``kept`` rows to
    ``path``, read :data:`TEXT_BATCH` input rows at a time, so that no more than a batch's texts are
    held."""
    schema = texts.collect_schema()
    total = pl.scan_parquet(list(job.interactions)).select(pl.len()).collect().item()  # parquet footers
    wanted = pl.col(INPUT_ROW).is_in(kept.implode())
    with AtomicParquetWriter(path, dict(schema)) as written:
        for offset in range(0, total, TEXT_BATCH):
            written.write(
                texts.filter(pl.col(INPUT_ROW).is_between(offset, offset + TEXT_BATCH - 1) & wanted).collect()
            )


@dataclass(frozen=True)
class ChunkJob:
    """Chunk ``number`` of a benchmark: ``rows`` of its scratch events from ``offset``."""

    job: BenchmarkJob
    number: int
    offset: int
    rows: int


@dataclass(frozen=True)
class ChunkDone:
    """A chunk's prompts per file and what it could not write, by reason."""

    name: str
    number: int
    counts: dict[str, int]
    left_out: dict[str, int]


def prompt_chunk(chunk: ChunkJob) -> ChunkDone:
    """Round 2 for one chunk (see the module docstring)."""
    job = chunk.job
    events = pl.scan_parquet(job.file("events")).slice(chunk.offset, chunk.rows).collect()
    texts = pl.scan_parquet(job.file("texts"))
    deferred = [c for c in texts.collect_schema().names() if c != INPUT_ROW]
    fetched = texts.filter(pl.col(INPUT_ROW).is_in(events[INPUT_ROW].implode())).collect(engine="streaming")
    events = (
        events.drop(deferred)
        .join(fetched, on=INPUT_ROW, how="left", maintain_order="left")
        .select(c for c in events.columns if c != INPUT_ROW)
    )
    items = pl.read_parquet(job.file("items"))
    with local_folder(job.chunk_folder(chunk.number)) as folder:
        written = write_prompts(folder, events, items, job.name, job.max_tokens, load_tokenizer(job.tokenizer))
        write_parquet(written.shown, folder / "shown.parquet")
    return ChunkDone(job.name, chunk.number, written.counts, dict(written.left_out.dropped))


@dataclass(frozen=True)
class FinishJob:
    """A benchmark's last round: its job, what :func:`build` made and its chunks' records, in order."""

    job: BenchmarkJob
    built: Built
    chunks: tuple[ChunkDone, ...]


def finish(done: FinishJob) -> None:
    """Round 3 for one benchmark (see the module docstring)."""
    job = done.job
    counts = {name: sum(c.counts[name] for c in done.chunks) for name in PROMPT_FILES}
    shown = pl.concat([pl.read_parquet(join(job.chunk_folder(c.number), "shown.parquet")) for c in done.chunks])
    with local_folder(location_of(job.folder)) as folder:
        for name, n in counts.items():
            if n:
                join_prompts(folder / PROMPTS_FOLDER / f"{name}.jsonl", job, done.chunks, name)
        from_ = OFFICIAL if done.built.official_reviews is not None else REDRAWN
        summary = write_summary(folder, done.built.split, counts, shown, from_)
    if done.built.official_reviews is not None:
        summary["official_reviews"] = done.built.official_reviews
    left_out = dict(done.built.left_out)
    for chunk in done.chunks:
        for reason, n in chunk.left_out.items():
            left_out[reason] = left_out.get(reason, 0) + n
    record: dict[str, Any] = {
        "warning": job.warning,
        "kcore_rounds": done.built.kcore_rounds,
        "summary": summary,
        "left_out": left_out,
    }
    write_parquet(
        pl.DataFrame({"benchmark": [job.name], "record": [json.dumps(record)]}, schema=RECORD), job.file("record")
    )


def join_prompts(path: Path, job: BenchmarkJob, chunks: tuple[ChunkDone, ...], name: str) -> None:
    """Write the prompt file ``name`` of ``chunks`` (in their order) joined at ``path``; a chunk
    wrote that file only where it made prompts of it."""
    with AtomicTextWriter(path) as joined:
        for chunk in chunks:
            if chunk.counts[name]:
                with (
                    fetched(join(job.chunk_folder(chunk.number), f"{PROMPTS_FOLDER}/{name}.jsonl")) as local,
                    open(local, encoding="utf-8", newline="") as lines,
                ):
                    joined.write(lines.read())
