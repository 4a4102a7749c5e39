"""Delimited readers: throughput of the reader alone and of the whole ingest (canonical mapping,
parquet writing) against a bare ``polars.read_csv`` of the same file, and peak memory at 1x and 10x
input, on real samples scaled up with renamed user ids per copy.

  python benchmarks/bench_delimited.py [--data ../shared/data] [--mb 100] [--work /tmp/bench-delimited]

Each measurement runs in a fresh interpreter so that peak RSS belongs to it alone; the
interpreter's own baseline (imports done, nothing read) is subtracted.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CASES = {
    # format, sample file relative to the data folder, column index of the user id
    "foodcom": ("foodcom", "foodcom/RAW_interactions.csv", 0),
    "movielens": ("movielens", "movielens/ml-latest-small/ratings.csv", 0),
}

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import polars as pl
from recgpt_data.ingest import ingest
from recgpt_data.sources import get_source
from recgpt_data.sources.base import ReadState
mode, fmt, path, out = sys.argv[1:5]
reader = get_source(fmt).roles_for(Path(path))[0].reader
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if mode == "ingest":
    rows = ingest(fmt, [path], out).kept
elif mode == "reader":
    rows = sum(batch.frame.height for batch in reader(Path(path), ReadState()))
else:
    rows = pl.read_csv(path, infer_schema=False).height
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": rows, "seconds": seconds, "peak_mib": (peak - base) / 1024}))
"""


def scale(sample: Path, user_column: int, target_mb: float, out: Path) -> Path:
    """``sample``'s records copied until the file reaches ``target_mb``, user ids renamed per copy."""
    with open(sample, newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    size = sample.stat().st_size
    copies = max(1, round(target_mb * 1e6 / size))
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for k in range(copies):
            for row in rows:
                row = list(row)
                row[user_column] = f"{row[user_column]}~{k}"
                writer.writerow(row)
    return out


def measure(mode: str, fmt: str, path: Path, out: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, mode, fmt, str(path), str(out)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--mb", type=float, default=100.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-delimited"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    for name, (fmt, sample, user_column) in CASES.items():
        for factor in (1, 10):
            folder = args.work / f"{name}-{factor}x"
            folder.mkdir(exist_ok=True)
            path = scale(args.data / sample, user_column, args.mb * factor, folder / Path(sample).name)
            mb = path.stat().st_size / 1e6
            peer = measure("polars", fmt, path, args.work / "unused")
            reader = measure("reader", fmt, path, args.work / "unused")
            ours = measure("ingest", fmt, path, args.work / f"out-{name}-{factor}x")
            assert peer["rows"] == reader["rows"] == ours["rows"], (peer, reader, ours)
            print(f"{name} {factor}x: {mb:.0f} MB, {ours['rows']:,} rows")
            for label, m in (("polars.read_csv", peer), ("reader", reader), ("ingest", ours)):
                print(
                    f"  {label:16s} {m['seconds']:7.2f} s  {mb / m['seconds']:6.1f} MB/s  "
                    f"{m['rows'] / m['seconds'] / 1e6:5.2f} M rows/s  peak +{m['peak_mib']:.0f} MiB  "
                    f"ratio to polars {peer['seconds'] / m['seconds']:.2f}",
                    flush=True,
                )
            path.unlink()
            shutil.rmtree(args.work / f"out-{name}-{factor}x")


if __name__ == "__main__":
    main()
