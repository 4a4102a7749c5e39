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
from pathlib import Path

import polars as pl

from recgpt_data.instruct.templates import TASKS
from recgpt_data.io.parquet import write_parquet, write_text
from recgpt_data.p5 import HELD_OUT
from recgpt_data.p5.prompts import benchmark_prompts, catalogue, rendered_events
from recgpt_data.p5.splits import (
    DATAMAPS_FILE,
    SEQUENTIAL_FILE,
    P5Split,
    datamaps,
    sequential_text,
)
from recgpt_data.stage import Drops, StageOutput, StageStats

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
    rating split came from (``rating_split_from``), and the prompts it could not write, by reason."""
    write_text(sequential_text(split), folder / SEQUENTIAL_FILE)
    write_text(json.dumps(datamaps(split), ensure_ascii=False) + "\n", folder / DATAMAPS_FILE)
    write_parquet(events.select([c for c in EVENT_COLUMNS if c in events.columns]), folder / "interactions.parquet")
    rendered = rendered_events(events, items)
    items_table = catalogue(rendered)
    write_parquet(items_table, folder / "items.parquet")
    prompts, left_out = benchmark_prompts(rendered, name, max_tokens, tokenizer)
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
    return summary, left_out


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
