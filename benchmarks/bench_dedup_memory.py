"""Peak memory of the ``dedup`` stage's tasks, round by round, over an ingested run folder.

  recgpt-data run spec.toml --out OUT --until ingest      # a spec: ingest, then dedup
  python benchmarks/bench_dedup_memory.py OUT --buckets N [--items mark] [--workers 2]

Cuts the ingest stage's interactions into ``N`` user buckets (by
:func:`recgpt_data.hashing.bucket` of the user id, in a worker process, before anything is
sampled), runs the stage's prepare step and then its buckets with fresh worker processes for
every round, and samples the resident
memory of the workers every 50 ms: each round's peak is what one of its tasks needed (docs/dedup.md,
"In buckets"). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from collections import defaultdict
from pathlib import Path

PEAKS: dict[str, int] = defaultdict(int)
ROUND = {"name": "start"}


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _rss_mib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _sample(stop: threading.Event) -> None:
    me = os.getpid()
    while not stop.is_set():
        name = ROUND["name"]
        PEAKS[name] = max([PEAKS[name]] + [_rss_mib(k) for k in _children(me)])
        PEAKS["driver"] = max(PEAKS["driver"], _rss_mib(me))
        time.sleep(0.05)


def cut_buckets(task: tuple) -> list[str]:
    """The interactions ``files`` cut into ``count`` user buckets, one file each under ``folder``."""
    import polars as pl

    from recgpt_data.hashing import bucket

    files, count, folder = task
    frame = pl.read_parquet(list(files))
    frame = frame.with_columns(bucket(frame["user_id"].fill_null(""), count).alias("_b"))
    paths = []
    for b in range(count):
        path = Path(folder) / f"interactions-{b:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.filter(pl.col("_b") == b).drop("_b").write_parquet(path)
        paths.append(str(path))
    return paths


def run_bucket(task: tuple) -> int:
    """One bucket of the stage, its tables written under the task's folder."""
    import polars as pl

    from recgpt_data.io.parquet import write_parquet
    from recgpt_data.stage import Context
    from recgpt_data.stages.dedup import dedup_stage

    path, index, count, shared, params, out = task
    tables = {"interactions": pl.scan_parquet(path), **{k: pl.scan_parquet(list(v)) for k, v in shared.items()}}
    output = dedup_stage(tables, params, Context(partition=(index, count)))
    for name, frame in output.to_write().items():
        data = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
        write_parquet(data, Path(out) / f"{name}-{index:05d}.parquet")
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="a run folder whose ingest stage has run")
    parser.add_argument("--items", default="mark", choices=["mark", "remap", "off"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--buckets", type=int, required=True, help="user buckets the stage runs in")
    args = parser.parse_args()

    import polars as pl

    from recgpt_data.dedup.prepare import prepare_dedup
    from recgpt_data.dedup.scopes import DedupParams
    from recgpt_data.engines.local import LocalEngine
    from recgpt_data.stage import Context, Preparation

    def mapper(fn, tasks):  # fresh workers for every round: each round's own peak
        engine = LocalEngine(workers=args.workers)
        ROUND["name"] = fn.__name__
        try:
            return list(engine.map(fn, tasks))
        finally:
            engine.close()

    ingest = args.out / ".stages" / "ingest"
    params = DedupParams(items=args.items)
    scratch = args.out / ".scratch" / "dedup-memory"
    shutil.rmtree(scratch, ignore_errors=True)
    whole = tuple(sorted(str(p) for p in (ingest / "interactions").glob("*.parquet")))
    items = tuple(sorted(str(p) for p in (ingest / "items").glob("*.parquet")))
    engine = LocalEngine(workers=1)
    try:
        parts = next(iter(engine.map_in_pool(cut_buckets, [(whole, args.buckets, str(scratch / "buckets"))])))
    finally:
        engine.close()
    stop = threading.Event()
    threading.Thread(target=_sample, args=(stop,), daemon=True).start()
    start = time.perf_counter()
    preparation = Preparation(
        {"interactions": tuple((p,) for p in parts), "items": (items,)},
        {"interactions": True, "items": False},
        scratch / "prepare",
        mapper,
    )
    prepared = prepare_dedup(preparation, params, Context())
    tasks = [(p, i, len(parts), dict(prepared.tables), params, str(scratch / "out")) for i, p in enumerate(parts)]
    mapper(run_bucket, tasks)
    seconds = time.perf_counter() - start
    stop.set()
    rows = pl.scan_parquet(parts).select(pl.len()).collect().item()
    shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps({"buckets": len(parts), "rows": rows, "seconds": round(seconds, 1), "peak_rss_mib": PEAKS}))


if __name__ == "__main__":
    main()
