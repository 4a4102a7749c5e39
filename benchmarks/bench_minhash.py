"""MinHash signatures: ``datasketch.MinHash.bulk`` against ``MinHasher``, side by side, one thread,
and the signature stage's peak memory at 1x and 10x input.

  python benchmarks/bench_minhash.py [--data ../shared/data] \
      [--scaled-parquet bench-data/dedup-work/canonical/interactions/amazon2014/scaled/*.parquet]

Every measurement runs in a fresh interpreter with ``OMP_NUM_THREADS=1`` and
``POLARS_MAX_THREADS=1`` set before any import, on the real review texts of the Amazon samples in
../shared/data, 128 permutations, seed 1, datasketch's legacy scheme. Both sides must produce
the same signatures (checked). Rows:

- ``datasketch bulk``: ``MinHash.bulk`` over ready-made shingle lists (shingling not timed);
- ``datasketch from text``: the same plus building those shingle lists from the raw texts;
- ``MinHasher from text``: raw texts in, signatures out (normalising and shingling included),
  through the compiled kernels; compiling them (once per process) is timed apart, as ``compile_cpu_s``;
- ``MinHasher numpy``: the same through the numpy code that runs where numba is missing.

Memory: the signature stage streamed over the scaled file in batches of 16,384 texts (band keys
computed and discarded), at 1x (its first tenth) and 10x (all of it); peak RSS above the
interpreter's baseline after imports.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FILES = (
    "amazon2018/All_Beauty_5.json",
    "amazon2018/Magazine_Subscriptions_5.json",
    "amazon2014/reviews_Musical_Instruments_5.json.gz",
    "amazon2014/reviews_Digital_Music_5.json.gz",
)

SPEED = r"""
import gzip, hashlib, json, sys, time
import numpy as np, polars as pl
from datasketch import MinHash
from recgpt_data.dedup import minhash
from recgpt_data.dedup.minhash import MinHasher
from recgpt_data.dedup.normalize import normalize
mode, files = sys.argv[1], sys.argv[2:]
texts = []
for f in files:
    opener = gzip.open if f.endswith(".gz") else open
    with opener(f, "rt", encoding="utf-8") as handle:
        try:
            for line in handle:
                try:
                    texts.append(json.loads(line).get("reviewText"))
                except ValueError:
                    pass
        except EOFError:
            pass

def shingle_lists(series):
    out = []
    for norm in normalize(series).fill_null("").to_list():
        words = norm.split(" ") if norm else []
        out.append([] if not words else [norm.encode()] if len(words) < 5 else
                   [" ".join(words[i:i + 5]).encode() for i in range(len(words) - 4)])
    return out

series = pl.Series(texts, dtype=pl.String)
compile_cpu = None
if mode == "minhasher_text":
    compile_cpu = time.process_time()
    minhash._kernel.prepare()
    compile_cpu = time.process_time() - compile_cpu
elif mode == "minhasher_numpy":
    minhash._kernel = None
if mode == "datasketch_bulk":
    lists = shingle_lists(series)
    cpu, wall = time.process_time(), time.perf_counter()
    result = MinHash.bulk(lists, num_perm=128, seed=1, scheme="legacy")
elif mode == "datasketch_text":
    cpu, wall = time.process_time(), time.perf_counter()
    result = MinHash.bulk(shingle_lists(series), num_perm=128, seed=1, scheme="legacy")
else:
    hasher = MinHasher(num_perm=128, seed=1, ngram=5)
    cpu, wall = time.process_time(), time.perf_counter()
    result = hasher.signatures(series)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
sig = np.asarray(result if mode.startswith("minhasher") else [m.hashvalues for m in result], dtype=np.uint32)
print(json.dumps({"mode": mode, "texts": len(texts), "unique_texts": series.n_unique(),
                  "shingles": sum(map(len, shingle_lists(series))), "cpu_s": cpu, "wall_s": wall,
                  "compile_cpu_s": compile_cpu, "sha": hashlib.sha1(sig.tobytes()).hexdigest()}))
"""

MEMORY = r"""
import json, resource, sys
import pyarrow.parquet as pq, polars as pl
from recgpt_data.dedup.lsh import band_keys
from recgpt_data.dedup.minhash import MinHasher
path, limit = sys.argv[1], int(sys.argv[2])
hasher = MinHasher(num_perm=128, seed=1, ngram=5)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
def batches():
    left = limit
    for batch in pq.ParquetFile(path).iter_batches(batch_size=16384, columns=["review_text"]):
        if left <= 0:
            return
        series = pl.from_arrow(batch.column(0)).slice(0, left)
        left -= len(series)
        yield series
rows = 0
for sig in hasher.signature_batches(batches()):
    band_keys(sig, 9, 13)
    rows += len(sig)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": rows, "peak_above_baseline_mib": (peak - base) / 1024}))
"""


def child(code: str, *args: str) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "POLARS_MAX_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--scaled-parquet", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sets = {
        "all four files": [str(args.data / f) for f in FILES],
        "Musical Instruments only (96% distinct shingles)": [str(args.data / FILES[2])],
    }
    results: dict = {}
    for name, files in sets.items():
        rows = {}
        for mode in ("datasketch_bulk", "datasketch_text", "minhasher_text", "minhasher_numpy"):
            runs = [child(SPEED, mode, *files) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["cpu_s"])
            rows[mode] = {k: best[k] for k in ("texts", "unique_texts", "shingles", "sha", "compile_cpu_s")} | {
                "cpu_s_range": [round(min(r["cpu_s"] for r in runs), 3), round(max(r["cpu_s"] for r in runs), 3)],
                "cpu_s": round(best["cpu_s"], 3),
                "wall_s": round(best["wall_s"], 3),
                "docs_per_cpu_s": round(best["texts"] / best["cpu_s"]),
            }
        assert len({r["sha"] for r in rows.values()}) == 1, "signatures differ"
        for ours in ("minhasher_text", "minhasher_numpy"):
            for mode in ("datasketch_bulk", "datasketch_text"):
                rows[f"{ours}_speedup_vs_{mode}"] = round(rows[mode]["cpu_s"] / rows[ours]["cpu_s"], 2)
        results[name] = rows
        print(name, json.dumps(rows, indent=1), flush=True)
    if args.scaled_parquet:
        total = child(
            "import pyarrow.parquet as pq, json, sys; print(json.dumps(pq.ParquetFile(sys.argv[1]).metadata.num_rows))",
            str(args.scaled_parquet),
        )
        one = child(MEMORY, str(args.scaled_parquet), str(total // 10))
        ten = child(MEMORY, str(args.scaled_parquet), str(total))
        results["memory"] = {
            "1x": one,
            "10x": ten,
            "ratio": round(ten["peak_above_baseline_mib"] / one["peak_above_baseline_mib"], 2),
        }
        print(json.dumps(results["memory"], indent=1), flush=True)
    out = REPO / "bench-data" / "bench_minhash.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
