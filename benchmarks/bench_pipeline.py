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
- Local workers (``--chain DIR``): the whole demo chain (``pipelines/demo.toml``'s stages, ingest to
  card) over an Amazon 2014 reviews file and its meta scaled together by ``scale_pair.py`` (in
  ``DIR``, its ``<id>~<copy>`` ids rewritten in Amazon's forms), run by the CLI with ``--workers 1`` and ``--workers 2`` into fresh folders, alternately
  ``--repeat`` times. Per run: wall and CPU seconds, the load average before and after, and each
  stage's seconds; parallel efficiency = T(1 worker) / (2 x T(2 workers)), for the whole chain and
  for its partitioned stages alone. The final folders of the two must be byte-identical.

    /work/venv/bin/python benchmarks/bench_pipeline.py [--scale 10] [--buckets 16]
    python ../shared/tools/scale_pair.py reviews_Digital_Music_5.json.gz meta_Digital_Music.json.gz \
        --copies 16 --out bench-data/dm-x16
    /work/venv/bin/python benchmarks/bench_pipeline.py --chain bench-data/dm-x16 [--partitions 8] [--repeat 2]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
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
    return [pl.read_parquet(list(pieces)) for pieces in split_by([path], "user_id", buckets, target)]


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
    parser.add_argument("--chain", type=Path, help="folder of a scaled reviews + meta pair: run the worker benchmark")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if args.chain is not None:
        workers_benchmark(args.chain.resolve(), args.partitions, args.repeat)
        return
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


CLI = Path(sys.executable).parent / "recgpt-data"


def chain_spec(scaled: Path, partitions: int, target: Path) -> Path:
    """``pipelines/demo.toml`` with its ingest reading the scaled pair and one benchmark on it."""
    text = (REPO / "pipelines" / "demo.toml").read_text(encoding="utf-8")
    text = re.sub(r"^partitions = \d+", f"partitions = {partitions}", text, flags=re.M)
    text = re.sub(
        r"params\.sources = \[.*?\n\]",
        f'params.sources = [{{ format = "amazon2014", paths = ["{scaled}"] }}]',
        text,
        flags=re.S,
    )
    text = re.sub(
        r"params\.benchmarks = \[.*?\n\]",
        'params.benchmarks = [{ name = "scaled", dataset = "amazon2014/Scaled", k = 2 }]',
        text,
        flags=re.S,
    )
    target.write_text(text, encoding="utf-8")
    return target


def cli_run(spec: Path, out: Path, workers: int) -> dict:
    """One cold CLI run: wall and CPU seconds (the CLI and its workers), load averages, stage seconds."""
    load_before = os.getloadavg()[0]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [str(CLI), "run", str(spec), "--out", str(out), "--workers", str(workers)], capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"run failed ({done.returncode}): {done.stderr[-2000:]}")
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))["stages"]
    return {
        "workers": workers,
        "wall": wall,
        "cpu": (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime),
        "load": (load_before, os.getloadavg()[0]),
        "stages": {key: record["seconds"] for key, record in stats.items()},
        "rows": stats["ingest"]["rows_out"],
        "disk": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
    }


SCALED_ID = re.compile(r"([0-9A-Z]+)~(\d+)")


def amazon_id(match: re.Match[str]) -> str:
    """A scaled id ``<id>~<copy>`` in Amazon's forms, which ingest checks: copy 0 keeps its id, other
    copies of a 10-character ASIN get another 10 characters (a hash of the pair), reviewer ids a suffix."""
    original, copy = match.group(1), int(match.group(2))
    if copy == 0:
        return original
    if len(original) == 10:
        digest = int.from_bytes(hashlib.blake2b(match.group(0).encode(), digest_size=8).digest(), "big")
        return "".join("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[(digest // 36**i) % 36] for i in range(10))
    return f"{original}Z{copy}"


def with_amazon_ids(scaled: Path, target: Path) -> Path:
    """``scaled``'s reviews and meta, every ``<id>~<copy>`` rewritten by :func:`amazon_id`."""
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(scaled.glob("*.json.gz")):
        with (
            gzip.open(path, "rt", encoding="utf-8") as src,
            gzip.open(target / path.name, "wt", compresslevel=1) as dst,
        ):
            for line in src:
                dst.write(SCALED_ID.sub(amazon_id, line))
    return target


def workers_benchmark(scaled: Path, partitions: int, repeat: int) -> None:
    """The demo chain over ``scaled`` with one and with two local workers, alternately."""
    from conftest import folder_digests

    from recgpt_data import stages as registry
    from recgpt_data.pipeline.spec import load_spec

    work = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    try:
        raw = with_amazon_ids(scaled, work / "raw")
        inputs = sum(p.stat().st_size for p in raw.iterdir())
        spec = chain_spec(raw, partitions, work / "chain.toml")
        partitioned = {s.key for s in load_spec(spec).stages if registry.get(s.stage).partition is not None}
        runs = []
        for attempt in range(repeat):
            for workers in (1, 2):
                out = work / f"out-{workers}-{attempt}"
                run = cli_run(spec, out, workers)
                runs.append(run)
                print(
                    f"workers {workers}: wall {run['wall']:7.1f} s, cpu {run['cpu']:7.1f} s, "
                    f"load {run['load'][0]:.1f} -> {run['load'][1]:.1f}, rows {run['rows']}, "
                    f"disk {run['disk'] / inputs:.2f} x the {inputs:,} input bytes"
                )
            same = folder_digests(work / f"out-1-{attempt}") == folder_digests(work / f"out-2-{attempt}")
            assert same, "the two builds differ"
            for workers in (1, 2):
                shutil.rmtree(work / f"out-{workers}-{attempt}")
        report(runs, partitioned)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(runs: list[dict], partitioned: set[str]) -> None:
    """Per-stage seconds (best of the runs of each worker count) and the parallel efficiencies."""
    best = {w: min((r for r in runs if r["workers"] == w), key=lambda r: r["wall"]) for w in (1, 2)}
    print(f"\n{'stage':<20} {'1 worker':>10} {'2 workers':>10} {'ratio':>7}")
    for key, one in best[1]["stages"].items():
        two = best[2]["stages"][key]
        mark = " (partitioned)" if key in partitioned else ""
        print(f"{key:<20} {one:>10.2f} {two:>10.2f} {one / two if two else float('nan'):>7.2f}{mark}")
    part = {w: sum(s for k, s in best[w]["stages"].items() if k in partitioned) for w in (1, 2)}
    print(
        f"\nwhole chain: T1 {best[1]['wall']:.1f} s, T2 {best[2]['wall']:.1f} s, "
        f"efficiency T1 / (2 x T2) = {best[1]['wall'] / (2 * best[2]['wall']):.2f}"
    )
    print(f"partitioned stages: T1 {part[1]:.1f} s, T2 {part[2]:.1f} s, efficiency {part[1] / (2 * part[2]):.2f}")
    print(
        f"cores busy (cpu / wall): 1 worker {best[1]['cpu'] / best[1]['wall']:.2f}, "
        f"2 workers {best[2]['cpu'] / best[2]['wall']:.2f}"
    )
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
