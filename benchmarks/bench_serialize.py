"""Benchmark: history serialization + token counting against bare ``Tokenizer.encode_batch``, and
peak memory of the bucketed document build at 1x and 10x input.

Input: the real Amazon 2018 5-core files (All_Beauty, Magazine_Subscriptions, with the Magazine
metadata of the reviewed items) scaled with ``../shared/tools/scale_reviews.py`` to at least 100 MB
(1x) and ten times that (10x) under ``bench-data/serialize/``, then ingested to canonical parquet.

- Throughput: on the 1x input, ``history_lines`` + ``chunk_histories`` (serialize, count, chunk)
  versus ``Tokenizer.encode_batch`` of the very document texts they produce, in one process,
  alternated for ``--rounds`` rounds; the best time of each is compared (the machine is shared).
- Memory: each scale in a fresh process runs ``pretrain_documents`` one user bucket at a time (as
  the runner's partitioned mode does; buckets sized to ``--bucket-rows`` events) and
  ``write_pretrain``; peak RSS (VmHWM) above the RSS after imports and tokenizer load.

    /work/venv/bin/python benchmarks/bench_serialize.py
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import resource
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
DATA = SHARED / "data" / "amazon2018"
BENCH = REPO / "bench-data" / "serialize"
MIN_BYTES = 100 * 1024 * 1024


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process image (VmHWM; ``ru_maxrss`` would carry over the
    parent's peak across fork and exec)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def in_bucket(index: int, buckets: int) -> pl.Expr:
    """Rows of the users in bucket ``index``: the cut the runner makes for a partitioned stage."""
    from recgpt_data.hashing import bucket

    return pl.col("user_id").map_batches(
        partial(bucket, buckets=buckets), return_dtype=pl.UInt32, is_elementwise=True
    ) == pl.lit(index, pl.UInt32)


def seed_files() -> list[Path]:
    """One copy of the inputs: the real review files and the reviewed items' metadata records."""
    source = BENCH / "source"
    source.mkdir(parents=True, exist_ok=True)
    reviews = [DATA / "All_Beauty_5.json", DATA / "Magazine_Subscriptions_5.json"]
    asins = {json.loads(line)["asin"] for path in reviews for line in path.open(encoding="utf-8")}
    meta = source / "meta_Magazine_Subscriptions.json"
    with (
        gzip.open(DATA / "meta_Magazine_Subscriptions.json.gz", "rt", encoding="utf-8") as lines,
        open(meta, "w", encoding="utf-8") as out,
    ):
        out.writelines(line for line in lines if json.loads(line)["asin"] in asins)
    return [*reviews, meta]


def scaled(copies: int, files: list[Path]) -> Path:
    """The inputs scaled to ``copies`` copies with scale_reviews.py, ingested to canonical parquet."""
    from recgpt_data.ingest import ingest

    folder = BENCH / f"x{copies}"
    if (folder / "canonical" / "summary.json").is_file():
        return folder / "canonical"
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for path in files:
        target = raw / path.name
        subprocess.run(
            [
                sys.executable,
                str(SHARED / "tools" / "scale_reviews.py"),
                str(path),
                "--copies",
                str(copies),
                "--out",
                str(target),
            ],
            check=True,
        )
    shutil.rmtree(folder / "canonical", ignore_errors=True)
    ingest("amazon2018", [raw], folder / "canonical")
    return folder / "canonical"


def raw_bytes(canonical: Path) -> int:
    return sum(p.stat().st_size for p in (canonical.parent / "raw").iterdir())


def throughput(canonical: Path, rounds: int) -> dict:
    """Serialize + count + chunk vs bare encode_batch on the same document texts, alternated for
    ``rounds`` rounds; the best time of each (the machine is shared, so the best is the least noisy)."""
    from recgpt_data.chunking import TokenCounter, chunk_histories
    from recgpt_data.histories import bucket_events, history_lines, user_buckets
    from recgpt_data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer()
    counter = TokenCounter(tokenizer)
    interactions = pl.scan_parquet(canonical / "interactions" / "**" / "*.parquet")
    items = pl.scan_parquet(canonical / "items" / "**" / "*.parquet")
    events = bucket_events(interactions, items, user_buckets(interactions, 1)).frame
    ours, bare = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        documents = chunk_histories(history_lines(events), counter).documents
        ours.append(time.perf_counter() - started)
        texts = documents["text"].to_list()
        started = time.perf_counter()
        encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
        bare.append(time.perf_counter() - started)
        exact = sum(len(e.ids) for e in encodings)
        assert exact == documents["num_tokens"].sum(), "num_tokens differs from the bare tokenizer"
        del encodings
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    return {
        "events": events.height,
        "documents": documents.height,
        "text_mb": round(megabytes, 1),
        "tokens": exact,
        "rounds": rounds,
        "serialize_count_s": [round(t, 2) for t in ours],
        "bare_encode_batch_s": [round(t, 2) for t in bare],
        "serialize_count_mb_s": round(megabytes / min(ours), 2),
        "bare_encode_batch_mb_s": round(megabytes / min(bare), 2),
        "ratio": round(min(bare) / min(ours), 3),
    }


def memory(canonical: Path, bucket_rows: int) -> dict:
    """Peak RSS above baseline of the bucketed document build and the shard writer (one process)."""
    from recgpt_data.corpus import Layout, write_corpus
    from recgpt_data.io.parquet import write_parquet
    from recgpt_data.stage import Context
    from recgpt_data.stages.pretrain_documents import DocumentsParams, pretrain_documents_stage
    from recgpt_data.tokenizer import load_tokenizer

    load_tokenizer()
    pl.DataFrame({"a": [1]}).lazy().collect(engine="streaming")
    baseline = rss_bytes()
    out = canonical.parent / "out"
    shutil.rmtree(out, ignore_errors=True)
    context = Context(seed=1, out_dir=out / "folder", scratch=out / "scratch")
    started = time.perf_counter()
    interactions = pl.scan_parquet(canonical / "interactions" / "**" / "*.parquet")
    items = pl.scan_parquet(canonical / "items" / "**" / "*.parquet")
    rows = interactions.select(pl.len()).collect().item()
    buckets = max(1, round(rows / bucket_rows))
    parts = []
    for index in range(buckets):
        part = interactions.filter(in_bucket(index, buckets)).collect(engine="streaming")
        documents = pretrain_documents_stage({"interactions": part.lazy(), "items": items}, DocumentsParams(), context)
        path = out / "documents" / f"part-{index:05d}.parquet"
        write_parquet(documents.tables["documents"], path)
        parts.append(path)
        del part, documents
    layout = Layout(str(context.scratch), str(context.out_dir), context.seed)
    written = write_corpus([str(p) for p in parts], None, layout, map, shard_bytes=32 * 1024 * 1024)
    return {
        "events": rows,
        "buckets": buckets,
        "shards": {split: len(records) for split, records in written.shards.items()},
        "seconds": round(time.perf_counter() - started, 1),
        "baseline_mb": round(baseline / 2**20, 1),
        "peak_above_baseline_mb": round((peak_rss_bytes() - baseline) / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bucket-rows", type=int, default=80_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_only:
        print(json.dumps(memory(args.memory_only, args.bucket_rows)))
        return
    files = seed_files()
    per_copy = sum(p.stat().st_size for p in files)
    copies = math.ceil(MIN_BYTES / per_copy)
    one, ten = scaled(copies, files), scaled(10 * copies, files)
    result = {"input_mb": {"1x": round(raw_bytes(one) / 2**20, 1), "10x": round(raw_bytes(ten) / 2**20, 1)}}
    for name, canonical in (("1x", one), ("10x", ten)):
        run = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-only",
                str(canonical),
                "--bucket-rows",
                str(args.bucket_rows),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        result[f"memory_{name}"] = json.loads(run.stdout.strip().splitlines()[-1])
    result["memory_ratio_10x_over_1x"] = round(
        result["memory_10x"]["peak_above_baseline_mb"] / result["memory_1x"]["peak_above_baseline_mb"], 3
    )
    result["throughput_1x"] = throughput(one, args.rounds)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
