"""Benchmark: each stage's peak resident memory on the projection's inputs at 1x and 4x, to find
the stages whose peak grows with the input.

The chain and inputs are :mod:`bench_projection`'s (``pipelines/recgpt.toml`` on the scaled Digital
Music reviews, and on copies of MovieLens' ratings; partitions scaled with the input so that a
bucket holds as much at 4x as at 1x). Each stage runs in a fresh CLI process (``recgpt-data run
--until STAGE``, the stages before it cached), on one worker (the driver runs the tasks itself: the
one-process run) and on ``--workers`` local workers, each of one thread; the peak resident memory
of its driver and of its largest worker is read from ``/proc`` every 0.05 s as the kernel records
it (``VmHWM``, so no spike between two reads is missed). One JSON line per stage run, then per stage
the 4x / 1x ratio of each peak. ``--until STAGE`` runs the chain up to that stage only.

    python benchmarks/bench_stage_memory.py [--copies 10] [--movielens-copies 2] [--partitions 8] > stages.jsonl
    python benchmarks/bench_stage_memory.py --kinds text --until clean_items    # a part of the chain
    python benchmarks/bench_stage_memory.py --runs stages.jsonl    # the ratios again, from the runs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

from bench_projection import CLI, Engine, projection_spec, ratings_input, text_input
from proc_usage import peak_rss, sampling, tree_pids


def peaks_of(process: subprocess.Popen) -> tuple[dict[str, int], str]:
    """Wait for ``process`` (a CLI run on local workers); the most resident bytes its driver and its
    largest worker held, as the kernel records them (``VmHWM``, read every 0.05 s while they live),
    and its stderr."""
    peaks = {"driver": 0, "largest_worker": 0}

    def sample() -> None:
        peaks["driver"] = max(peaks["driver"], peak_rss(process.pid))
        workers = [peak_rss(pid) for pid in tree_pids(process.pid) - {process.pid}]
        peaks["largest_worker"] = max(peaks["largest_worker"], *workers, 0)

    with sampling(sample, 0.05):
        _, stderr = process.communicate()
    return peaks, stderr


def stage_runs(spec: Path, out: Path, engine: Engine, until: str | None) -> dict[str, dict[str, int]]:
    """Peak resident bytes of the driver and of the largest worker while each stage of ``spec`` (up
    to ``until``, all without it) runs alone on ``engine`` (its inputs cached by the runs before
    it), in ``spec``'s order."""
    from recgpt_data.engines import thread_environment

    peaks = {}
    names = [entry["stage"] for entry in tomllib.loads(spec.read_text(encoding="utf-8"))["stages"]]
    if until is not None and until not in names:
        raise SystemExit(f"--until {until}: not a stage of the chain ({', '.join(names)})")
    for name in names[: names.index(until) + 1] if until is not None else names:
        command = [str(CLI), "run", str(spec), "--out", str(out), "--until", name, *engine.args]
        process = subprocess.Popen(
            [*command, "--task-cpus", "1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **thread_environment(1)},
        )
        peaks[name], stderr = peaks_of(process)
        if process.returncode != 0:
            raise SystemExit(f"{name} failed ({process.returncode}): {stderr[-2000:]}")
    return peaks


def ratios(runs: dict[str, dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Per input and engine, per stage: 4x peak / 1x peak of the driver and of the largest worker."""
    found = {}
    for key, large in runs.items():
        kind, scale, engine = key.split("-")
        small = runs.get(f"{kind}-1x-{engine}")
        if scale != "4x" or small is None:
            continue
        found[f"{kind}-{engine}"] = {
            stage: {k: round(peak[k] / small["stages"][stage][k], 2) for k in peak if small["stages"][stage][k] > 0}
            for stage, peak in large["stages"].items()
        }
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=10, help="copies of the Digital Music pair at 1x")
    parser.add_argument("--movielens-copies", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=8, help="partitions at 1x (4 times as many at 4x)")
    parser.add_argument("--workers", type=int, default=2, help="workers of the several-worker runs")
    parser.add_argument("--kinds", default="text,ratings", help="inputs to run, of text and ratings")
    parser.add_argument("--until", help="run the chain up to this stage only (default: every stage)")
    parser.add_argument("--runs", type=Path, help="the ratios of the JSON lines of an earlier run instead of running")
    args = parser.parse_args()
    if args.runs is not None:
        lines = [json.loads(line) for line in args.runs.read_text(encoding="utf-8").splitlines() if '"run"' in line]
        print(json.dumps({"ratios": ratios({line.pop("run"): line for line in lines})}, indent=1))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-stage-memory-"))
    runs: dict[str, dict] = {}
    try:
        for kind in args.kinds.split(","):
            for scale in (1, 4):
                copies = (args.copies if kind == "text" else args.movielens_copies) * scale
                folder = work / f"{kind}-{scale}"
                # the ratings in a folder of their own: a folder given to ingest is its input whole,
                # so output folders beside the ratings would make ingest stale at every stage's run
                raw = text_input(copies, folder) if kind == "text" else ratings_input(copies, folder / "raw")
                spec = projection_spec(kind, raw, args.partitions * scale, folder / "spec.toml")
                for workers in sorted({1, args.workers}):
                    engine = Engine(f"{workers}w", ["--workers", str(workers)])
                    run = {"copies": copies, "stages": stage_runs(spec, folder / f"out-{workers}w", engine, args.until)}
                    shutil.rmtree(folder / f"out-{workers}w")
                    runs[f"{kind}-{scale}x-{engine.name}"] = run
                    print(json.dumps({"run": f"{kind}-{scale}x-{engine.name}", **run}), flush=True)
                shutil.rmtree(folder)
        print(json.dumps({"ratios": ratios(runs)}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
