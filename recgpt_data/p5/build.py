"""A benchmark's folder and the ``held_out`` table (the library of the ``p5_benchmark`` and ``load_p5``
stages, which build P5-protocol benchmarks from canonical tables or load P5's own split files, write
each under ``eval/<benchmark>/`` of the output folder, and add their validation and test interactions
to the ``held_out`` table).

``eval/<benchmark>/`` holds P5's ``sequential_data.txt`` and ``datamaps.json``, ``interactions.parquet``
(every interaction with raw and P5 ids, its position and both splits after the leak fix),
``items.parquet`` (the catalogue a harness matches generations against), ``prompts/<task>_<split>.jsonl``
and ``summary.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from tokenizers import Tokenizer

from recgpt_data.instruct.templates import TASKS
from recgpt_data.io.atomic import AtomicTextWriter
from recgpt_data.io.parquet import write_parquet, write_text
from recgpt_data.p5 import HELD_OUT, TEST, VALIDATION
from recgpt_data.p5.prompts import benchmark_items, benchmark_prompts, catalogue, rendered_events, user_chunks
from recgpt_data.p5.splits import (
    DATAMAPS_FILE,
    SEQUENTIAL_FILE,
    P5Split,
    datamaps,
    sequential_text,
)
from recgpt_data.stage import Drops, StageOutput, StageStats
from recgpt_data.tokenizer import load_tokenizer

OFFICIAL = "P5's official rating_splits_augmented.pkl"
REDRAWN = "redrawn here (seeded 80/10/10), not P5's: its rating_splits_augmented.pkl was not given"
NO_RATINGS = "none: P5's sequential files carry no ratings (no rating_splits_augmented.pkl beside them)"
EVENT_COLUMNS = (
    "user_id",
    "item_id",
    "user_index",
    "item_index",
    "position",
    "timestamp",
    "rating",
    "rating_max",
    "sequential_split",
    "rating_split",
)


PROMPTS_FOLDER = "prompts"
PROMPT_FILES = tuple(f"{task}_{split}" for task in TASKS for split in (VALIDATION, TEST))  # prompts/<name>.jsonl


def write_benchmark(
    folder: Path,
    split: P5Split,
    events: pl.DataFrame,
    items: pl.LazyFrame,
    name: str,
    max_tokens: int,
    tokenizer: Path,
    rating_split_from: str,
) -> tuple[dict, Drops]:
    """Write one benchmark's files under ``folder``; returns its summary, which says where its
    rating split came from (``rating_split_from``), and the prompts it could not write, by reason.
    (The ``p5_benchmark`` stage writes the same files in tasks: :mod:`recgpt_data.p5.tasks`.)"""
    write_split_files(folder, split, events)
    written = write_prompts(folder, events, benchmark_items(events, items), name, max_tokens, load_tokenizer(tokenizer))
    summary = write_summary(folder, split_summary(split, events), written.counts, written.shown, rating_split_from)
    return summary, written.left_out


def write_split_files(folder: Path, split: P5Split, events: pl.DataFrame) -> None:
    """P5's ``sequential_data.txt`` and ``datamaps.json`` of ``split``, and ``interactions.parquet``."""
    write_text(sequential_text(split), folder / SEQUENTIAL_FILE)
    write_text(json.dumps(datamaps(split), ensure_ascii=False) + "\n", folder / DATAMAPS_FILE)
    write_parquet(events.select([c for c in EVENT_COLUMNS if c in events.columns]), folder / "interactions.parquet")


@dataclass(frozen=True)
class SplitSummary:
    """What a benchmark's ``summary.json`` says of its split: ``head`` (its source and dataset, for
    the licence check, and its users, items and interactions) and ``splits`` (events per split)."""

    head: dict[str, Any]
    splits: dict[str, dict[str, int]]


def split_summary(split: P5Split, events: pl.DataFrame) -> SplitSummary:
    """The :class:`SplitSummary` of a benchmark's split and events."""
    head = {
        **{c: events[c][0] for c in ("source", "dataset") if c in events.columns},
        "users": len(split.users),
        "items": len(split.items),
        "interactions": split.interactions,
    }
    splits = {
        column: dict(sorted(events[column].value_counts().iter_rows()))
        for column in ("sequential_split", "rating_split")
        if column in events.columns
    }
    return SplitSummary(head, splits)


@dataclass
class PromptsWritten:
    """What :func:`write_prompts` wrote: prompts per file (:data:`PROMPT_FILES`), those it could not
    write by reason, and each event's item and response-fields line (for the catalogue)."""

    counts: dict[str, int]
    left_out: Drops
    shown: pl.DataFrame


def write_prompts(
    folder: Path, events: pl.DataFrame, items: pl.DataFrame, name: str, max_tokens: int, encoder: Tokenizer
) -> PromptsWritten:
    """Render ``events`` (whole users, in user then position order) with ``items``
    (:func:`~recgpt_data.p5.prompts.benchmark_items`) a slice of users at a time and write their
    prompts under ``folder/prompts/``, each as it is made (a file only where there are prompts)."""
    left_out, shown, counts = Drops(), [], dict.fromkeys(PROMPT_FILES, 0)
    with ExitStack() as files:
        writers: dict[str, AtomicTextWriter] = {}
        for chunk in user_chunks(events):
            rendered = rendered_events(chunk, items)
            shown.append(rendered.select("item_index", "item_id", "__short"))
            for row in benchmark_prompts(rendered, name, encoder, max_tokens, left_out):
                key = f"{row['task']}_{row['split']}"
                if key not in writers:
                    writers[key] = files.enter_context(AtomicTextWriter(folder / PROMPTS_FOLDER / f"{key}.jsonl"))
                writers[key].write(json.dumps(row, ensure_ascii=False) + "\n")
                counts[key] += 1
    return PromptsWritten(counts, left_out, pl.concat(shown))


def write_summary(
    folder: Path, split: SplitSummary, counts: dict[str, int], shown: pl.DataFrame, rating_split_from: str
) -> dict:
    """Write the item catalogue (``items.parquet``, from the events' ``shown`` lines) and
    ``summary.json``; returns the summary."""
    items_table = catalogue(shown)
    write_parquet(items_table, folder / "items.parquet")
    summary = {
        **split.head,
        "items_without_text": int((items_table["line"] == "").sum()),
        "prompts": counts,
        "rating_split_from": rating_split_from,
        **split.splits,
    }
    write_text(json.dumps(summary, indent=2) + "\n", folder / "summary.json")
    return summary


def benchmark_output(
    tables: Mapping[str, pl.LazyFrame], frames: list[pl.DataFrame], stats: StageStats, left_out: Drops
) -> StageOutput:
    """A benchmark stage's output: the ``held_out`` table an earlier stage wrote (if any) followed by
    ``frames``; ``left_out`` holds what the benchmarks left out of their own copies, which goes under
    ``info`` rather than among the stage's drops."""
    stats.info["left_out_of_benchmarks"] = dict(sorted(left_out.dropped.items()))
    earlier = [tables["held_out"].collect().cast(HELD_OUT)] if "held_out" in tables else []
    held_out = pl.concat([pl.DataFrame(schema=HELD_OUT), *earlier, *frames])
    stats.rows_out["held_out"] = held_out.height
    return StageOutput({"held_out": held_out}, stats)
