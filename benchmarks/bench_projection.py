"""Benchmark: the paper's chain (``pipelines/recgpt.toml``'s stages, as it ships) on scaled real
inputs, measured for the projection of the full build.

Two kinds of input, because the sources differ in kind, not only in size:

- **text reviews** (Amazon, Yelp, Goodreads reviews, Steam reviews, HotelRec, Food.com): the real
  Amazon 2014 Digital Music reviews and their metadata scaled together by ``scale_pair.py`` (ids
  renamed so titles survive, 30% of the words of each copy replaced) and rewritten into Amazon's id
  forms, read as one Amazon 2014 category with its P5 benchmark;
- **ratings only** (MovieLens, Netflix, BookCrossing, Anime): the real MovieLens ml-latest-small
  ratings copied with new user ids (``userId + copy x 100,000``) beside its real ``movies.csv``.

Each kind runs at ``n`` and ``4n`` copies with ``--workers 1`` and ``--workers 2`` and, with
``--ray``, on a two-node Ray cluster on this machine (``ray start --head --node-ip-address
127.0.0.1`` and a second ``ray start --address`` node, one CPU each, started for the run), every
worker of one thread (``--task-cpus 1``; the one-worker run bounded the same way), so that a
stage's seconds are core-seconds and T(1 worker) / (2 x T(2 workers)) is the parallel efficiency at
4n; cold, into fresh folders. Per run: wall seconds, each stage's seconds and bytes written
(``stats.json``), and peak resident memory sampled from ``/proc`` every 0.2 s: of the driver, of
the largest worker, of the workers together (local worker processes, or Ray's ``ray::`` workers)
and of every process of the run (with Ray, the nodes' own services too).

The per-stage cost of one raw interaction is the *marginal* cost, (T(4n) - T(n)) / (3 x rows(n)),
so that what every run pays once (interpreter start, tokenizer load, kernel compiles) is not
multiplied by the dumps' sizes. The projection multiplies these costs by the published sizes of the
raw dumps (:data:`PUBLISHED`, each with its source), divides by cores x the measured parallel
efficiency, and sums the bytes every stage keeps for the disk footprint.

    python benchmarks/bench_projection.py [--copies 16] [--movielens-copies 8] [--partitions 8] [--ray] > runs.jsonl
    python benchmarks/bench_projection.py --kinds ratings --ray >> runs.jsonl   # one input at a time
    python benchmarks/bench_projection.py --kinds text --scales 4 --ray --no-local >> runs.jsonl
    python benchmarks/bench_projection.py --runs runs.jsonl      # the summary again, from the runs
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
TOOLS = REPO.parent / "shared" / "tools"
CLI = Path(sys.executable).parent / "recgpt-data"
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))  # the loopback Ray nodes

from bench_pipeline import with_amazon_ids
from proc_usage import cpu_seconds, rss, tree_pids

# The raw dumps RecGPT's sources publish, in interactions (reviews or ratings) as their owners give them.
PUBLISHED = {
    "text": {
        "amazon2018": (233_100_000, "Ni, Li and McAuley, EMNLP 2019: Amazon Review Data (2018), 233.1M reviews"),
        "amazon2014_benchmarks": (
            662_436,
            "McAuley et al., SIGIR 2015, 5-core Beauty 198,502 + Sports 296,337 + Toys 167,597 (P5's splits)",
        ),
        "goodreads": (15_739_967, "Wan and McAuley, RecSys 2018: Goodreads reviews (goodreads_reviews_dedup), 15.7M"),
        "hotelrec": (50_264_531, "Antognini and Faltings, LREC 2020: HotelRec, 50.2M reviews"),
        "steam": (7_793_069, "Kang and McAuley, ICDM 2018: Steam reviews, 7.79M"),
        "yelp": (6_990_280, "Yelp Open Dataset (2022 release): 6,990,280 reviews"),
        "foodcom": (1_132_367, "Majumder et al., EMNLP 2019: Food.com interactions, 1,132,367"),
    },
    "ratings": {
        "netflix": (100_480_507, "Netflix Prize: 100,480,507 ratings"),
        "movielens": (25_000_095, "GroupLens MovieLens 25M: 25,000,095 ratings"),
        "anime": (7_813_737, "CooperUnion Anime Recommendations Database (Kaggle): 7,813,737 ratings"),
        "bookcrossing": (1_149_780, "Ziegler et al., WWW 2005: Book-Crossing, 1,149,780 ratings"),
    },
}
NOT_SIZED = "WikiRec (its published size could not be found from here; left out of the projection)"
SKIPPED_STAGES = ("cross_release",)  # needs two Amazon releases; its cost is one pass per user bucket


def projection_spec(kind: str, raw: Path, partitions: int, target: Path) -> Path:
    """``pipelines/recgpt.toml`` as it ships, its ingest reading one scaled source of ``kind``."""
    spec = tomllib.loads((REPO / "pipelines" / "recgpt.toml").read_text(encoding="utf-8"))
    lines = [f'name = "projection-{kind}"', f"partitions = {partitions}", f'tokenizer = "{tokenizer()}"', ""]
    for entry in spec["stages"]:
        name = entry["stage"]
        if name in SKIPPED_STAGES or str(entry.get("enabled", "true")).startswith("${"):
            continue  # the additions switched off by default stay off
        if kind == "ratings" and name in ("p5_benchmark", "hold_out"):
            continue  # P5's benchmarks are Amazon's and Yelp's
        lines += ["[[stages]]", f'stage = "{name}"']
        params = dict(entry.get("params", {}))
        if name == "ingest":
            source = {"text": ("amazon2014", raw), "ratings": ("movielens", raw)}[kind]
            params = {"sources": [{"format": source[0], "paths": [str(source[1])]}]}
        if name == "p5_benchmark":
            params = {"benchmarks": [{"name": "scaled", "dataset": "amazon2014/Scaled"}]}
        lines += [f"params.{key} = {toml_value(value)}" for key, value in params.items()]
        lines.append("")
    target.write_text("\n".join(lines), encoding="utf-8")
    return target


def toml_value(value: object) -> str:
    """``value`` as a TOML value (inline tables for mappings)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def tokenizer() -> Path:
    return REPO.parent / "shared" / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"


def text_input(copies: int, target: Path) -> Path:
    """The real Digital Music reviews and metadata scaled ``copies`` times by ``scale_pair.py``, in
    Amazon's id forms."""
    source = SHARED / "amazon2014"
    command = [
        sys.executable,
        str(TOOLS / "scale_pair.py"),
        str(source / "reviews_Digital_Music_5.json.gz"),
        str(source / "meta_Digital_Music.json.gz"),
        "--copies",
        str(copies),
        "--mutate",
        "0.3",
        "--out",
        str(target / "scaled"),
    ]
    subprocess.run(command, check=True, capture_output=True)
    return with_amazon_ids(target / "scaled", target / "raw")


def ratings_input(copies: int, target: Path) -> Path:
    """ml-latest-small's ratings ``copies`` times with new user ids, beside its real movies."""
    source = SHARED / "movielens" / "ml-latest-small"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "movies.csv", target / "movies.csv")
    with open(source / "ratings.csv", newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    with open(target / "ratings.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for k in range(copies):
            writer.writerows([str(int(r[0]) + k * 100_000), *r[1:]] for r in rows)
    return target


def ray_worker(pid: int) -> bool:
    """Whether ``pid`` is a Ray worker (Ray titles them ``ray::<task>``), not one of a node's services."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::")
    except OSError:
        return False


@dataclass
class Engine:
    """How a run places its tasks: ``--workers N`` local processes, or a two-node loopback Ray cluster
    (``nodes``: the process groups of its ``ray start`` nodes, whose workers the run's tasks use)."""

    name: str
    args: list[str]
    nodes: tuple[int, ...] = ()
    env: dict[str, str] = field(default_factory=dict)  # what the driver needs to join (the cluster's token)

    def processes(self, driver: int) -> tuple[dict[int, int], dict[int, int]]:
        """Resident bytes of the run's workers and of the Ray nodes' own services, by pid."""
        if not self.nodes:
            return {pid: rss(pid) for pid in tree_pids(driver) - {driver}}, {}
        from ray_nodes import group_and_children

        pids = set().union(*(group_and_children(group) for group in self.nodes))
        workers = {pid for pid in pids if ray_worker(pid)}
        return {pid: rss(pid) for pid in workers}, {pid: rss(pid) for pid in pids - workers}


def sampled(
    process: subprocess.Popen, engine: Engine, every: float = 0.2
) -> tuple[dict[str, int], dict[str, float], str]:
    """Wait for ``process`` (a CLI run on ``engine``), sampling its processes every ``every``
    seconds: the resident-memory peaks of its driver, of its largest worker, of its workers together
    and of every process of the run (a Ray cluster's services included); the CPU seconds each of
    driver, workers and services used (each process's last sample: a process's use in the
    ``every`` seconds before it ended is missed); and its stderr."""
    peaks = {"driver": 0, "largest_worker": 0, "workers": 0, "tree": 0}
    used: dict[str, dict[int, float]] = {"driver": {}, "workers": {}, "services": {}}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(every):
            driver = rss(process.pid)
            workers, services = engine.processes(process.pid)
            peaks["driver"] = max(peaks["driver"], driver)
            peaks["largest_worker"] = max(peaks["largest_worker"], max(workers.values(), default=0))
            peaks["workers"] = max(peaks["workers"], sum(workers.values()))
            peaks["tree"] = max(peaks["tree"], driver + sum(workers.values()) + sum(services.values()))
            for role, pids in (("driver", [process.pid]), ("workers", workers), ("services", services)):
                for pid in pids:
                    used[role][pid] = max(used[role].get(pid, 0.0), cpu_seconds(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    stop.set()
    sampler.join()
    return peaks, {role: sum(pids.values()) for role, pids in used.items()}, stderr


def cli_run(spec: Path, out: Path, engine: Engine) -> dict:
    """One cold CLI run with its memory sampled: wall, stage seconds and bytes, peak RSS of the
    driver, of the largest worker, of the workers together and of every process of the run (a Ray
    cluster's services included), and the CPU seconds of the driver, the workers and the services.
    Every worker has one thread (``--task-cpus 1``; the one-worker run
    is bounded to one thread as a worker is), so that T(1 worker, 1 thread) / (N x T(N workers, 1
    thread each)) is the parallel efficiency and a stage's seconds in the one-worker run are
    core-seconds."""
    from recgpt_data.engines import thread_environment

    process = subprocess.Popen(
        [str(CLI), "run", str(spec), "--out", str(out), *engine.args, "--task-cpus", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **engine.env, **thread_environment(1)},
    )
    started = time.perf_counter()
    peaks, cpu, stderr = sampled(process, engine)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"run failed ({process.returncode}): {stderr[-2000:]}")
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))["stages"]
    return {
        "engine": engine.name,
        "wall": wall,
        "load": os.getloadavg()[0],
        "rows": stats["ingest"]["rows_out"]["interactions"],
        "stages": {key: record["seconds"] for key, record in stats.items()},
        "bytes": {key: record.get("bytes_written", 0) for key, record in stats.items()},
        "peak_rss": peaks,
        "cpu_seconds": cpu,
    }


def engine_runs(spec: Path, folder: Path, workers: int, ray: bool, local: bool = True) -> Iterator[tuple[str, dict]]:
    """Runs of ``spec`` on one local worker and on ``workers`` local workers (unless not ``local``)
    and, with ``ray``, on a two-node Ray cluster on 127.0.0.1 (one CPU per node, so two workers),
    started for the run and stopped after it; each into a fresh folder under ``folder``, removed
    after it."""
    for w in (1, workers) if local else ():
        yield f"{w}w", cli_run(spec, folder / f"out-{w}w", Engine(f"{w}w", ["--workers", str(w)]))
        shutil.rmtree(folder / f"out-{w}w")
    if not ray:
        return
    from ray_nodes import two_nodes

    root = Path(tempfile.mkdtemp(prefix="bp-", dir="/tmp"))  # short: Ray's socket paths live under it
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}  # only this run joins
    try:
        with two_nodes(root, {**os.environ, **token, "RAY_USAGE_STATS_ENABLED": "0"}) as (address, head, second):
            nodes = (head.group, second.group)
            engine = Engine("ray2", ["--engine", "ray", "--address", address], nodes, token)
            yield "ray2", cli_run(spec, folder / "out-ray2", engine)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(folder / "out-ray2", ignore_errors=True)


def serial_read(raw: Path, work: Path) -> dict:
    """The one-decompressor part of ingest on the scaled reviews file: CPU seconds to cut it into
    blocks (decompress once, write the zstd copies), per review; at full scale the largest dump
    file is read this way once. The blocks are 16 MiB so that a file of this size is cut at all
    (the stage cuts files over a quarter of its 256 MiB blocks); the pass costs the same per byte."""
    from recgpt_data.ingest_tasks import FileTask, open_file
    from recgpt_data.sources import get_source

    [reviews] = sorted(raw.glob("reviews_*.json.gz"))
    source = get_source("amazon2014")
    [role] = [k for k, role in enumerate(source.roles) if role.matches(reviews.name)]
    block_bytes = 16 << 20
    task = FileTask(
        0, "amazon2014", role, "interactions", str(reviews), "amazon2014/Scaled", str(work), block_bytes, None, 0
    )
    started = time.process_time()
    _, blocks = open_file(task)
    seconds = time.process_time() - started
    with gzip.open(reviews, "rb") as lines:
        count = sum(1 for _ in lines)
    shutil.rmtree(work, ignore_errors=True)
    return {"seconds": seconds, "reviews": count, "blocks": len(blocks), "per_review": seconds / count}


def marginal(small: dict, large: dict) -> dict[str, float]:
    """Seconds per raw interaction of each stage, from the difference of the two sizes."""
    rows = large["rows"] - small["rows"]
    return {key: max(0.0, (large["stages"][key] - small["stages"][key]) / rows) for key in small["stages"]}


BENCHMARK_SOURCES = ("amazon2014_benchmarks", "yelp")  # the only sources p5_benchmark works on


def stage_cost(costs: dict[str, float], stage: str, source: str) -> float:
    """Seconds per interaction of ``source`` in ``stage`` (p5_benchmark only on benchmark sources)."""
    if stage == "p5_benchmark" and source not in BENCHMARK_SOURCES:
        return 0.0
    return costs.get(stage, 0.0)


# The largest single files of the dumps. Ingest reads every file of a line-oriented format through
# one decompressor whose blocks parse tasks share out, so the longest such read bounds ingest's time.
LARGEST_FILE = (
    51_311_621,
    "Ni, Li and McAuley, EMNLP 2019: Amazon Review Data (2018), Books.json.gz, 51,311,621 reviews in one file "
    "(HotelRec's one file holds 50,264,531)",
)


def spread_stages(costs: dict[str, dict[str, float]]) -> set[str]:
    """The stages whose work is split into tasks: partitioned by user or dataset, or a whole stage
    whose prepare step runs its work as tasks (ingest's files, the corpus' shards)."""
    from recgpt_data import stages as registry

    names = {name for kind in costs for name in costs[kind]}
    return {n for n in names if registry.get(n).partition is not None or registry.get(n).prepare is not None}


def project(
    costs: dict[str, dict[str, float]], disk: dict[str, float], efficiency: float, serial_read: float = 0.0
) -> dict:
    """The full build: core-hours per source and in all; hours on one and on four 16-core machines,
    the stages split into tasks spread over the cores at ``efficiency`` while each stage that is one
    task runs on one core, and ingest no faster than the largest file's one decompressor
    (``serial_read`` seconds per review of it); and the disk every stage keeps."""
    spread = spread_stages(costs)
    split = {"spread": 0.0, "single": 0.0}
    by_stage: dict[str, float] = {}
    disk_bytes, lines = 0.0, []
    for kind, sources in PUBLISHED.items():
        for name, (size, cited) in sources.items():
            seconds = {stage: stage_cost(costs[kind], stage, name) * size for stage in costs[kind]}
            for stage, value in seconds.items():
                split["spread" if stage in spread else "single"] += value
                by_stage[stage] = by_stage.get(stage, 0.0) + value
            disk_bytes += disk[kind] * size
            lines.append(
                {
                    "source": name,
                    "kind": kind,
                    "interactions": size,
                    "core_hours": sum(seconds.values()) / 3600,
                    "published": cited,
                }
            )
    floor = serial_read * LARGEST_FILE[0]

    def hours(cores: int) -> float:
        ingest = by_stage.get("ingest", 0.0) / (cores * efficiency) if "ingest" in spread else 0.0
        return (split["spread"] / (cores * efficiency) + split["single"] + max(0.0, floor - ingest)) / 3600

    return {
        "sources": lines,
        "core_hours": sum(split.values()) / 3600,
        "core_hours_by_stage": {k: v / 3600 for k, v in sorted(by_stage.items(), key=lambda kv: -kv[1])},
        "core_hours_single_task": split["single"] / 3600,
        "single_task_stages": sorted(set(by_stage) - spread),
        "largest_file_read_hours": floor / 3600,
        "largest_file": LARGEST_FILE[1],
        "hours_16_cores": hours(16),
        "hours_4x16_cores": hours(64),
        "efficiency_assumed": efficiency,
        "disk_tb": disk_bytes / 1e12,
        "not_sized": NOT_SIZED,
    }


def summarise(runs: dict[str, dict], workers: int) -> dict:
    """Per-stage marginal costs, disk per interaction, efficiency, memory ratios and the projections
    (those only where both kinds of input ran)."""
    kinds = [kind for kind in ("text", "ratings") if f"{kind}-4x-1w" in runs]
    whole = len(kinds) == 2  # the projection needs both kinds' costs; one kind's runs summarise alone
    read = runs["serial-read"]["per_review"] if "serial-read" in runs else 0.0
    costs = {kind: marginal(runs[f"{kind}-1x-1w"], runs[f"{kind}-4x-1w"]) for kind in kinds}
    disk = {kind: sum(runs[f"{kind}-4x-1w"]["bytes"].values()) / runs[f"{kind}-4x-1w"]["rows"] for kind in kinds}
    efficiency = {
        kind: runs[f"{kind}-4x-1w"]["wall"] / (workers * runs[f"{kind}-4x-{workers}w"]["wall"]) for kind in kinds
    }
    efficiency_ray = {  # two one-CPU Ray nodes: two workers
        kind: runs[f"{kind}-4x-1w"]["wall"] / (2 * runs[f"{kind}-4x-ray2"]["wall"])
        for kind in kinds
        if f"{kind}-4x-ray2" in runs
    }
    memory = {
        f"{kind}-{engine}": {
            k: runs[f"{kind}-4x-{engine}"]["peak_rss"].get(k, 0)
            / max(1, runs[f"{kind}-1x-{engine}"]["peak_rss"].get(k, 0))
            for k in ("driver", "largest_worker", "workers", "tree")
        }
        for kind in kinds
        for engine in ("1w", f"{workers}w", "ray2")
        if f"{kind}-1x-{engine}" in runs and f"{kind}-4x-{engine}" in runs
    }
    cpu = {  # where the CPU went at 4x: a Ray node's own services take cores from its workers
        f"{kind}-{engine}": {
            **runs[f"{kind}-4x-{engine}"]["cpu_seconds"],
            "wall": runs[f"{kind}-4x-{engine}"]["wall"],
        }
        for kind in kinds
        for engine in ("1w", f"{workers}w", "ray2")
        if "cpu_seconds" in runs.get(f"{kind}-4x-{engine}", {})
    }
    return {
        "us_per_interaction": {k: {s: v * 1e6 for s, v in c.items()} for k, c in costs.items()},
        "disk_bytes_per_interaction": disk,
        "efficiency": efficiency,
        "efficiency_two_ray_nodes": efficiency_ray,
        "memory_4x_over_1x": memory,
        "cpu_seconds_4x": cpu,
        "serial_read": runs.get("serial-read"),
        "projection_measured_efficiency": project(costs, disk, min(efficiency.values()), read) if whole else None,
        "projection_ideal": project(costs, disk, 1.0, read) if whole else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=16, help="copies of the Digital Music pair at 1x")
    parser.add_argument("--movielens-copies", type=int, default=8)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="workers of the efficiency runs")
    parser.add_argument("--ray", action="store_true", help="also run each input on a two-node Ray cluster on 127.0.0.1")
    parser.add_argument(
        "--kinds", default="text,ratings", help="the inputs to run, comma-separated (text, ratings): runs in parts"
    )
    parser.add_argument("--scales", default="1,4", help="the input sizes to run, comma-separated (1, 4)")
    parser.add_argument("--no-local", action="store_true", help="only the Ray runs (with --ray)")
    parser.add_argument("--runs", type=Path, help="summarise the JSON lines of an earlier run instead of running")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    if not kinds or set(kinds) - {"text", "ratings"}:
        parser.error(f"--kinds takes text and/or ratings, not {args.kinds!r}")
    scales = [int(scale) for scale in args.scales.split(",") if scale in ("1", "4")]
    if len(scales) != len(args.scales.split(",")):
        parser.error(f"--scales takes 1 and/or 4, not {args.scales!r}")
    if args.no_local and not args.ray:
        parser.error("--no-local leaves only the Ray runs: give --ray too")
    if args.runs is not None:
        lines = [json.loads(line) for line in args.runs.read_text(encoding="utf-8").splitlines() if '"run"' in line]
        runs = {line.pop("run"): line for line in lines}
        print(json.dumps({"summary": summarise(runs, args.workers)}, indent=1))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-projection-"))
    runs: dict[str, dict] = {}
    try:
        for kind in kinds:
            for scale in scales:
                copies = (args.copies if kind == "text" else args.movielens_copies) * scale
                folder = work / f"{kind}-{scale}"
                raw = text_input(copies, folder) if kind == "text" else ratings_input(copies, folder)
                spec = projection_spec(kind, raw, args.partitions * scale, folder / "spec.toml")
                if kind == "text" and scale == 4:
                    read = serial_read(raw, folder / "serial-read")
                    runs["serial-read"] = read
                    print(json.dumps({"run": "serial-read", **read}), flush=True)
                for engine, run in engine_runs(spec, folder, args.workers, args.ray, not args.no_local):
                    runs[f"{kind}-{scale}x-{engine}"] = run
                    print(json.dumps({"run": f"{kind}-{scale}x-{engine}", **run}), flush=True)
        print(json.dumps({"summary": summarise(runs, args.workers)}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
