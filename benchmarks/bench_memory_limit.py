"""Benchmark: local workers given a memory limit (``--task-memory``) stay under it on a dataset
whose tables hold millions of rows.

The input is ``bench_projection.py``'s ratings kind (the real MovieLens ml-latest-small ratings
copied with new user ids): 32 copies are 3,200,128 ratings. ``pipelines/recgpt.toml``'s chain, as
``bench_projection.py`` runs it on that kind, runs cold with ``--workers N --task-cpus 1
--task-memory M``; every 0.1 s each worker's resident memory is read from ``/proc`` (``VmRSS``, and
the kernel's own peak ``VmHWM``; :mod:`proc_usage`, the sampler ``bench_projection.py`` uses), with
the driver's and the sum over the process tree. The run
must finish (a task past the limit would end it with one error line) and every worker's peak must
stay under ``M``.

    python benchmarks/bench_memory_limit.py [--copies 32] [--partitions 32] [--workers 2] [--memory 1GiB]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_projection import CLI, projection_spec, ratings_input
from proc_usage import peak_rss, rss, sampling, tree_pids


def is_worker(pid: int) -> bool:
    """Whether ``pid`` is a spawned pool worker (not the resource tracker)."""
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def limited_run(spec: Path, out: Path, workers: int, memory: str) -> dict:
    """One cold CLI run with ``workers`` workers of one thread, each bounded to ``memory``; the
    peaks of each process's resident memory, sampled and as the kernel recorded them."""
    from recgpt_data.engines import thread_environment

    command = [str(CLI), "run", str(spec), "--out", str(out), "--workers", str(workers), "--task-cpus", "1"]
    process = subprocess.Popen(
        [*command, "--task-memory", memory],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **thread_environment(1)},
    )
    peaks: dict[int, int] = {}
    tree = {"sum": 0}

    def sample() -> None:
        total = 0
        for pid in [process.pid, *filter(is_worker, tree_pids(process.pid) - {process.pid})]:
            now = rss(pid)
            peaks[pid] = max(peaks.get(pid, 0), now, peak_rss(pid))
            total += now
        tree["sum"] = max(tree["sum"], total)

    started = time.perf_counter()
    with sampling(sample, 0.1):
        _, stderr = process.communicate()
    wall = time.perf_counter() - started
    driver = peaks.pop(process.pid, 0)
    worker_peaks = sorted(peaks.values(), reverse=True)
    result = {
        "returncode": process.returncode,
        "error": next((line for line in stderr.splitlines() if line.startswith("error:")), None),
        "wall": wall,
        "load": os.getloadavg(),
        "workers": workers,
        "worker_processes": len(worker_peaks),
        "worker_peaks": worker_peaks,
        "largest_worker": max(worker_peaks, default=0),
        "driver": driver,
        "tree": tree["sum"],
    }
    if process.returncode == 0:
        stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))["stages"]
        result["rows"] = stats["ingest"]["rows_out"]["interactions"]
    return result


def main() -> None:
    from recgpt_data.engines import parse_size

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=32, help="copies of the MovieLens ratings")
    parser.add_argument("--partitions", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory", default="1GiB", help="each worker's limit, --task-memory")
    parser.add_argument("--work", type=Path, help="where to build (default: a temporary folder, removed after)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-memory-limit-"))
    try:
        raw = ratings_input(args.copies, work / "raw")
        spec = projection_spec("ratings", raw, args.partitions, work / "spec.toml")
        run = limited_run(spec, work / "out", args.workers, args.memory)
        limit = parse_size(args.memory)
        run.update(
            limit=limit,
            largest_worker_over_limit=run["largest_worker"] / limit,
            met=run["returncode"] == 0 and run["largest_worker"] < limit,
        )
        print(json.dumps(run, indent=1))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
