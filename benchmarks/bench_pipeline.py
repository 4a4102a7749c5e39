"""Benchmark: how buckets of a partitioned stage get their rows, and what a cached rerun costs.

Input: the real MovieLens ml-latest-small ratings (100,004 interactions, 671 users) ingested to
canonical parquet, then copied ``--scale`` times with distinct user ids (``<id>#<copy>``), so that
the table has ``scale`` x 100,004 rows and ``scale`` x 671 users.

- Bucketing: for ``--buckets`` user buckets, (a) the naive way, every bucket scans the whole table
  and filters its users, versus (b) the runner's way, ``split_by`` cuts the table once in one
  streaming pass and every bucket reads its own part. Wall time for all buckets, each way; the two
  must give the same rows.
- Cached rerun: the demo-like pipeline of ``tests/pipeline_stages.py`` on the same ratings, run once,
  then rerun; the rerun's wall time is the runner's overhead (fingerprints, markers), with no work.

    /work/venv/bin/python benchmarks/bench_pipeline.py [--scale 10] [--buckets 16]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "tests"))

from recgpt_data.hashing import bucket
from recgpt_data.ingest import ingest
from recgpt_data.pipeline.shuffle import split_by


def scaled_table(work: Path, scale: int) -> Path:
    """The ml-latest-small ratings as canonical parquet, copied ``scale`` times with new user ids."""
    ingest("movielens", [SHARED / "movielens" / "ml-latest-small" / "ratings.csv"], work / "ingest")
    base = pl.read_parquet(next((work / "ingest" / "interactions").rglob("*.parquet")))
    copies = [base.with_columns(pl.col("user_id") + f"#{k}") for k in range(scale)]
    path = work / "interactions.parquet"
    pl.concat(copies).write_parquet(path, compression="zstd", row_group_size=65_536)
    return path


def naive(path: Path, buckets: int) -> list[pl.DataFrame]:
    """Every bucket scans the whole table and keeps its users."""
    out = []
    for index in range(buckets):
        frame = pl.read_parquet(path)
        out.append(frame.filter(bucket(frame["user_id"], buckets) == index))
    return out


def cut_once(path: Path, buckets: int, target: Path) -> list[pl.DataFrame]:
    """One streaming pass cuts the table; every bucket reads its own part."""
    return [pl.read_parquet(part) for part in split_by([path], "user_id", buckets, target)]


def timed(label: str, call):
    started = time.perf_counter()
    value = call()
    seconds = time.perf_counter() - started
    print(f"{label:<52} {seconds:8.2f} s")
    return value, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--buckets", type=int, default=16)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        path = scaled_table(work, args.scale)
        rows = pl.scan_parquet(path).select(pl.len()).collect().item()
        print(f"table: {rows:,} interactions, {args.buckets} buckets")
        slow, naive_s = timed("naive: each bucket scans and filters the table", lambda: naive(path, args.buckets))
        fast, cut_s = timed(
            "runner: cut once, each bucket reads its part", lambda: cut_once(path, args.buckets, work / "b")
        )
        assert all(a.equals(b) for a, b in zip(slow, fast, strict=True)), "the two ways disagree"
        print(f"ratio naive / cut once: {naive_s / cut_s:.2f}x")
        rerun(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def rerun(work: Path) -> None:
    """A cold run and a cached rerun of the test pipeline over the ml-latest-small ratings."""
    import pipeline_stages

    from recgpt_data.pipeline.runner import run_spec
    from recgpt_data.pipeline.spec import load_spec

    spec = work / "spec.toml"
    text = pipeline_stages.spec_text(SHARED).replace(
        'params.sources = [{ format = "amazon2018", paths = ["${raw}/Magazine_Subscriptions_5.json", '
        '"${raw}/meta_Magazine_Subscriptions.json.gz"] }]',
        f'params.sources = [{{ format = "movielens", paths = ["{SHARED}/movielens/ml-latest-small"] }}]',
    )
    spec.write_text(text, encoding="utf-8")
    loaded = load_spec(spec)
    timed("pipeline, cold run", lambda: run_spec(loaded, work / "out"))
    result, _ = timed("pipeline, cached rerun (no work)", lambda: run_spec(loaded, work / "out"))
    assert set(result.states.values()) == {"cached"}


if __name__ == "__main__":
    main()
