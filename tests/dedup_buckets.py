"""Runs the ``dedup`` stage as the executor does, in this process: its prepare step over the
interactions cut into user buckets, then each bucket, and the outputs and stats put together."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import oracle_dedup
import polars as pl

from recgpt_data.dedup.prepare import prepare_dedup
from recgpt_data.dedup.scopes import DedupParams
from recgpt_data.hashing import bucket
from recgpt_data.pipeline.executor import merge_info, merge_stats
from recgpt_data.schema import CHRONOLOGICAL
from recgpt_data.stage import BLANKED, DROPPED, Context, Drops, Preparation, StageStats
from recgpt_data.stages.dedup import dedup_stage


@dataclass
class Run:
    """The stage's tables (interactions sorted by dataset and chronological order, items and the
    dropped and blanked tables as written) and merged stats."""

    tables: dict[str, pl.DataFrame]
    stats: StageStats


def run_buckets(
    interactions: pl.DataFrame,
    items: pl.DataFrame,
    params: DedupParams,
    partitions: int = 3,
    folder: Path | None = None,
    map_: Callable[[Callable, Sequence], Iterable] = map,
) -> Run:
    """The stage over ``partitions`` user buckets, its files under ``folder`` (default: a
    temporary folder, removed after)."""
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="dedup-") as temporary:
            return run_buckets(interactions, items, params, partitions, Path(temporary), map_)
    return run_stage(write_buckets(interactions, items, partitions, folder), params, map_)


@dataclass(frozen=True)
class Buckets:
    """The stage's input as a run hands it over: one interactions file per user bucket, the items
    file, and the folder the stage works in."""

    interactions: tuple[tuple[str, ...], ...]
    items: str
    folder: Path


def write_buckets(interactions: pl.DataFrame, items: pl.DataFrame, partitions: int, folder: Path) -> Buckets:
    """``interactions`` cut into ``partitions`` user buckets as the executor cuts them, and
    ``items``, written under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    cut = interactions.with_columns(bucket(interactions["user_id"].fill_null(""), partitions).alias("_b"))
    files = []
    for b in range(partitions):
        path = folder / f"interactions-{b}.parquet"
        cut.filter(pl.col("_b") == b).drop("_b").write_parquet(path)
        files.append((str(path),))
    items_path = folder / "items.parquet"
    items.write_parquet(items_path)
    return Buckets(tuple(files), str(items_path), folder)


def run_stage(buckets: Buckets, params: DedupParams, map_: Callable[[Callable, Sequence], Iterable] = map) -> Run:
    """The stage over buckets written by :func:`write_buckets`: its prepare step, then each bucket."""
    files, items_path, folder = buckets.interactions, buckets.items, buckets.folder
    partitions = len(files)
    preparation = Preparation(
        buckets={"interactions": tuple(files), "items": ((str(items_path),),)},
        bucketed={"interactions": True, "items": False},
        scratch=folder / "prepare",
        map=map_,
    )
    prepared = prepare_dedup(preparation, params, Context())
    parts, drops, frames = [], Drops(), []
    for b in range(partitions):
        tables = {
            "interactions": pl.scan_parquet(list(files[b])),
            "items": pl.scan_parquet(items_path),
            **{name: pl.scan_parquet(list(paths)) for name, paths in prepared.tables.items()},
        }
        output = dedup_stage(tables, params, Context(partition=(b, partitions)))
        parts.append(output.stats.to_dict())
        drops.update(output.drops)
        frames.append(output.tables["interactions"])
    stats = merge_stats([{**StageStats().to_dict(), **prepared.stats}, *parts])
    stats.info = merge_info(stats.info, dict(prepared.info))
    tables = {"interactions": pl.concat(frames).sort("dataset", *CHRONOLOGICAL, maintain_order=True)}
    tables.update({name: pl.read_parquet(list(paths)) for name, paths in prepared.outputs.items()})
    tables.update({f"{DROPPED}{name}": frame for name, frame in drops.tables().items()})
    tables.update({f"{BLANKED}{name}": frame for name, frame in drops.blanked_tables().items()})
    return Run(tables, stats)


def oracle(interactions: pl.DataFrame, items: pl.DataFrame, params: DedupParams) -> Run:
    """The same tables and stats from the single-process implementation (tests/oracle_dedup.py)."""
    done = oracle_dedup.dedup(interactions.lazy(), items.lazy(), params)
    stats = StageStats()
    stats.record(done.drops)
    stats.info = {**done.counters, "by_dataset": done.by_dataset}
    tables = {"interactions": done.interactions, "items": done.items}
    tables.update({f"{DROPPED}{name}": frame for name, frame in done.drops.tables().items()})
    tables.update({f"{BLANKED}{name}": frame for name, frame in done.drops.blanked_tables().items()})
    return Run(tables, stats)


def sorted_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """A table's rows in one order: by all its flat columns (the nested ones follow their row)."""
    flat = [c for c, dtype in frame.schema.items() if not dtype.is_nested()]
    return frame.sort(flat, nulls_last=True, maintain_order=True)


def assert_same(run: Run, expected: Run) -> None:
    """Equal tables (as sorted rows, same columns and types) and equal counts and counters."""
    assert sorted(run.tables) == sorted(expected.tables)
    for name, frame in expected.tables.items():
        got = run.tables[name]
        assert got.schema == frame.schema, name
        assert sorted_rows(got).equals(sorted_rows(frame)), name
    assert {k: v for k, v in run.stats.dropped.items()} == dict(expected.stats.dropped)
    assert run.stats.changed == dict(expected.stats.changed)
    info = {k: v for k, v in run.stats.info.items() if k != "note"}
    assert info == expected.stats.info
