"""The user-level split and the benchmark leakage guard.

Every user goes to pre-training or to the instruction pool by a seeded stable hash of the user id
(the same reviewer id goes the same way in every dataset and release, so no user is in both).
Before that, every interaction whose (user_id, item_id) is held out by a benchmark (its validation
and test items) is dropped, whatever dataset or release it comes from, and counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import polars as pl
from pydantic import Field

from recgpt_data.errors import UsageError
from recgpt_data.hashing import unit_interval
from recgpt_data.pipeline.spec import resolve_path
from recgpt_data.stage import Context, Drops, Frame, Params, StageOutput, StageStats, count, stage

HELD_OUT: dict[str, pl.DataType] = {
    "benchmark": pl.String(),
    "dataset": pl.String(),
    "user_id": pl.String(),
    "item_id": pl.String(),
    "split": pl.String(),
}
PRETRAIN = "pretrain"
INSTRUCT = "instruct"
PAIR = ("user_id", "item_id")
HELD = "__held_out"  # marks the interactions a held-out pair names, while the split stage cuts them


def read_p5_held_out(path: str | Path, benchmark: str, dataset: str) -> pl.DataFrame:
    """The held-out interactions of a P5 split: the last two items of each user (validation, then
    test), with raw ids. ``path`` is a folder holding ``sequential_data.txt`` + ``datamaps.json``
    (numeric ids mapped back to raw ones), or a raw-id ``user_sequence.txt`` (OpenP5) file or folder."""
    path = Path(path)
    if path.is_dir() and (path / "sequential_data.txt").is_file():
        datamaps = path / "datamaps.json"
        if not datamaps.is_file():
            raise UsageError(f"{path}: sequential_data.txt needs datamaps.json beside it to recover raw ids")
        maps = json.loads(datamaps.read_text(encoding="utf-8"))
        users, items = maps["id2user"], maps["id2item"]
        rows = [(users[u], items[i], s) for u, i, s in _last_two(path / "sequential_data.txt")]
    elif path.is_file() or (path / "user_sequence.txt").is_file():
        file = path if path.is_file() else path / "user_sequence.txt"
        rows = list(_last_two(file))
    else:
        raise UsageError(f"{path}: no P5 sequential_data.txt + datamaps.json or user_sequence.txt")
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "split"], orient="row")
    return frame.select(
        pl.lit(benchmark).alias("benchmark"), pl.lit(dataset).alias("dataset"), *frame.columns
    ).cast(HELD_OUT)


def _last_two(path: Path) -> Iterator[tuple[str, str, str]]:
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            user, *sequence = line.split()
            if len(sequence) < 2:
                raise UsageError(f"{path}:{number}: a P5 sequence needs at least two items")
            yield user, sequence[-2], "validation"
            yield user, sequence[-1], "test"


def held_out_pairs(held_out: Frame) -> pl.LazyFrame:
    """The distinct (user_id, item_id) pairs of a held-out table."""
    return held_out.lazy().select(*PAIR).unique(maintain_order=True)


def drop_held_out(interactions: Frame, held_out: Frame) -> pl.LazyFrame:
    """``interactions`` without any whose (user_id, item_id) is held out, from any dataset."""
    return interactions.lazy().join(held_out_pairs(held_out), on=list(PAIR), how="anti")


def assign_split(interactions: pl.DataFrame, fraction: float, seed: int) -> pl.DataFrame:
    """``interactions`` with a ``split`` column: ``instruct`` for users whose seeded hash falls
    below ``fraction``, else ``pretrain``. The hash is of the user id alone, so a reviewer who
    appears in several categories or releases of one source (Amazon 2014 and 2018 share reviewer
    ids) lands on the same side everywhere."""
    users = interactions.select(pl.col("user_id").unique().sort())
    users = users.with_columns(
        pl.when(unit_interval(users["user_id"], seed) < fraction)
        .then(pl.lit(INSTRUCT))
        .otherwise(pl.lit(PRETRAIN))
        .alias("split")
    )
    return interactions.join(users, on="user_id", how="left", maintain_order="left")


def leaked(output: Frame, held_out: Frame) -> pl.DataFrame:
    """The held-out (user_id, item_id) pairs present in ``output``: a frame with ``user_id`` and
    either ``item_id`` or a list column ``item_ids`` (as documents carry). Empty means no leak."""
    frame = output.lazy()
    if "item_ids" in frame.collect_schema().names():
        frame = frame.select("user_id", pl.col("item_ids").alias("item_id")).explode("item_id")
    return (
        frame.select(*PAIR)
        .join(held_out_pairs(held_out), on=list(PAIR), how="semi")
        .unique()
        .collect(engine="streaming")
    )


class HeldOutSource(Params):
    """One benchmark whose validation and test interactions are held out."""

    benchmark: str
    dataset: str
    path: str


class P5HeldOutParams(Params):
    benchmarks: list[HeldOutSource] = Field(default_factory=list)


@stage("p5_held_out", params=P5HeldOutParams, writes=("held_out",), version="1")
def p5_held_out_stage(tables: dict, params: P5HeldOutParams, ctx: Context) -> StageOutput:
    """Read the held-out interactions of P5-format benchmark splits into the ``held_out`` table."""
    stats = StageStats()
    frames = [pl.DataFrame(schema=HELD_OUT)]
    for spec in params.benchmarks:
        frame = read_p5_held_out(resolve_path(spec.path, ctx.spec_dir), spec.benchmark, spec.dataset)
        stats.info[spec.benchmark] = {"users": frame["user_id"].n_unique(), "held_out": frame.height}
        frames.append(frame)
    return StageOutput({"held_out": pl.concat(frames)}, stats)


class SplitParams(Params):
    instruct_fraction: float = Field(0.005, ge=0.0, le=1.0)


@stage(
    "split",
    params=SplitParams,
    reads=("interactions",),
    optional_reads=("held_out",),
    writes=("interactions",),
    partition="user",
    version="1",
)
def split_stage(tables: dict, params: SplitParams, ctx: Context) -> StageOutput:
    """Drop held-out interactions (all datasets and releases), then split users pretrain / instruct."""
    stats = StageStats()
    interactions = tables["interactions"]
    held_out = tables.get("held_out", pl.DataFrame(schema=HELD_OUT))
    stats.rows_in["interactions"] = count(interactions)
    stats.rows_in["held_out"] = count(held_out)
    marked = held_out_pairs(held_out).with_columns(pl.lit(True).alias(HELD))
    flagged = (
        interactions.lazy()
        .join(marked, on=list(PAIR), how="left", maintain_order="left")
        .collect(engine="streaming")
    )
    held = flagged[HELD].is_not_null()
    drops = Drops(stats)
    drops.add("interactions", flagged.filter(held).drop(HELD), "held_out")
    kept = flagged.filter(~held).drop(HELD)
    out = assign_split(kept, params.instruct_fraction, ctx.seed)
    users = out.group_by("split").agg(
        pl.struct("dataset", "user_id").n_unique().alias("users"), pl.len().alias("rows")
    )
    stats.info["users"] = {row["split"]: row["users"] for row in users.sort("split").iter_rows(named=True)}
    stats.info["interactions"] = {
        row["split"]: row["rows"] for row in users.sort("split").iter_rows(named=True)
    }
    if out.height and leaked(out, held_out).height:
        raise AssertionError("held-out interactions remain after the leakage guard")
    return StageOutput({"interactions": out}, stats, dropped=drops.tables())
