"""Local worker processes (``recgpt-data run --workers N``): the same bytes as one process, each
worker's libraries bounded to the threads it was given, and a dead worker reported in one line."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import worker_stages
from conftest import REPO, build, folder_digests

from recgpt_data.engines import WorkerCrash, get_engine, parse_size
from recgpt_data.engines.local import LocalEngine
from recgpt_data.errors import UsageError
from recgpt_data.pipeline.runner import run_spec
from recgpt_data.pipeline.spec import load_spec

TESTS = Path(__file__).resolve().parent
DRIVER = (
    "import sys, worker_stages; from recgpt_data.cli import main; sys.argv = ['recgpt-data', *sys.argv[1:]]; main()"
)
RUN_RECORDS = ("_SUCCESS.json", "hash-cache.json", "lock")  # hold timings or the runner's own state


def stage_tables(out: Path) -> dict[str, str]:
    """sha256 of every file under ``.stages`` but the run records: each stage's tables and dropped rows."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((out / ".stages").rglob("*"))
        if p.is_file() and p.name not in RUN_RECORDS and "_parts" not in p.parts
    }


def test_two_workers_forced_over_the_built_demo_rebuild_it_byte_identical(demo_corpus: Path, tmp_path: Path) -> None:
    """A copy of the one-process demo build, run again with ``--force`` in two workers: every stage
    runs again (none is taken from the copy) and writes the bytes one process wrote."""
    out = tmp_path / "out"
    shutil.copytree(demo_corpus, out)
    done = build("demo.toml", out, "--workers", "2", "--force")
    assert done.returncode == 0, done.stderr
    stages = [
        entry.get("id", entry["stage"])
        for entry in tomllib.loads((REPO / "pipelines" / "demo.toml").read_text())["stages"]
    ]
    said = re.findall(r"^(ran|cached)\s+(\S+)", done.stdout + done.stderr, re.MULTILINE)
    assert said == [("ran", key) for key in stages], done.stderr
    assert folder_digests(out) == folder_digests(demo_corpus)
    assert stage_tables(out) == stage_tables(demo_corpus)


def test_each_worker_bounds_its_libraries_threads() -> None:
    """Three threads each, on a machine whose default is its core count: polars' pool, numba's
    and the threads tokenizers starts for a batch all follow the bound."""
    engine = LocalEngine(workers=2, threads=3)
    try:
        found = list(engine.map(worker_stages.probe, range(4)))
    finally:
        engine.close()
    assert {f["pid"] for f in found} - {os.getpid()}, "the tasks ran in this process"
    assert {(f["polars"], f["numba"]) for f in found} == {(3, 3)}
    measured = [f["rayon"] for f in found if f["rayon"] is not None]
    assert measured and set(measured) == {3}


def test_a_dead_worker_is_one_error_line(tmp_path: Path) -> None:
    spec = worker_stages.crash_spec(tmp_path / "crash.toml")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, "run", str(spec), "--out", str(tmp_path / "out"), "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "a worker process died" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_workers_are_for_the_local_engine() -> None:
    with pytest.raises(UsageError, match="--workers is for --engine local"):
        get_engine("ray", workers=2)
    with pytest.raises(UsageError, match="at least 1"):
        LocalEngine(workers=0)


def test_task_flags_size_each_task() -> None:
    """``--task-cpus`` sets a local worker's threads; ``--task-memory`` takes sizes."""
    assert get_engine("local", workers=2, task_cpus=3).threads == 3
    with pytest.raises(UsageError, match="--task-cpus must be above 0"):
        get_engine("local", task_cpus=0)
    assert [parse_size(s) for s in ("512MiB", "4G", "2000", "1.5kb")] == [512 * 2**20, 4 * 10**9, 2000, 1500]
    with pytest.raises(UsageError, match="is not a size"):
        parse_size("4Q")


def test_a_task_past_its_workers_memory_limit_is_one_error() -> None:
    """``--task-memory`` bounds each local worker's resident memory (even one worker's: the tasks leave
    the driver); a task that allocates past it fails with one line naming the limit, and the next
    tasks run in new workers."""
    engine = get_engine("local", task_memory=2**30)
    try:
        assert not engine.in_process
        assert list(engine.map(worker_stages.allocate, [2**28])) == [2**28]
        with pytest.raises(WorkerCrash, match=r"^a task went past its worker's memory limit \(1\.00 GiB"):
            list(engine.map(worker_stages.allocate, [3 * 2**30]))
        assert list(engine.map(worker_stages.allocate, [2**20])) == [2**20]
    finally:
        engine.close()


def run_driver(spec: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    """``recgpt-data run SPEC --out OUT ARGS`` in a fresh interpreter that has the test stages."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-c", DRIVER, "run", str(spec), "--out", str(out), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_prepare_step_runs_its_tasks_on_the_engine_before_the_buckets(tmp_path: Path, workers: int) -> None:
    spec = worker_stages.prepared_spec(tmp_path / "prepared.toml")
    out = tmp_path / "out"
    done = run_driver(spec, out, "--workers", str(workers))
    assert done.returncode == 0, done.stderr
    stages = out / ".stages"
    ingested = sum(pq.read_metadata(p).num_rows for p in (stages / "ingest").glob("interactions/*.parquet"))
    counted = pq.read_table(sorted((stages / "t_prepared" / "counted").glob("part-*.parquet"))).to_pydict()
    assert ingested > 0 and set(counted["total"]) == {ingested}
    assert len(counted["user_id"]) == len(set(counted["user_id"]))
    info = json.loads((stages / "t_prepared" / "_SUCCESS.json").read_text())["stats"]["info"]
    if workers > 1:  # the prepare step's tasks ran in the worker processes, not in the driver
        assert info["prepare_pids"] and info["driver_pid"] not in info["prepare_pids"]
    assert not (out / ".scratch" / "t_prepared").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_whole_stage_s_prepare_step_runs_its_tasks_and_its_outputs_are_adopted(tmp_path: Path, workers: int) -> None:
    spec = worker_stages.prepared_spec(tmp_path / "prepared.toml", "t_prepared_whole")
    out = tmp_path / "out"
    done = run_driver(spec, out, "--workers", str(workers))
    assert done.returncode == 0, done.stderr
    stages = out / ".stages"
    ingested = sorted((stages / "ingest").glob("interactions/*.parquet"))
    per_file = sorted(pq.read_metadata(p).num_rows for p in ingested)
    counts = pq.read_table(sorted((stages / "t_prepared_whole" / "counts").glob("*.parquet"))).to_pydict()
    checked = pq.read_table(stages / "t_prepared_whole" / "checked.parquet").to_pydict()
    assert counts["rows"] == per_file and checked["total"] == checked["rows"] == [sum(per_file)]
    record = json.loads((stages / "t_prepared_whole" / "_SUCCESS.json").read_text())
    assert record["stats"]["rows_out"]["counts"] == len(per_file)
    if workers > 1:
        info = record["stats"]["info"]
        assert info["prepare_pids"] and info["driver_pid"] not in info["prepare_pids"]
    assert not (out / ".scratch" / "t_prepared_whole").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_whole_stage_runs_in_a_worker_process(tmp_path: Path, workers: int) -> None:
    """With more than one worker a stage that is not partitioned runs as a task in a worker; with one,
    in the driver."""
    spec = worker_stages.where_spec(tmp_path / "where.toml")
    out = tmp_path / "out"
    done = run_driver(spec, out, "--workers", str(workers))
    assert done.returncode == 0, done.stderr
    info = json.loads((out / ".stages" / "t_where" / "_SUCCESS.json").read_text())["stats"]["info"]
    assert info["spawned"] is (workers > 1)
    rows = pq.read_table(out / ".stages" / "t_where" / "where.parquet").column("rows").to_pylist()
    assert rows == [
        sum(pq.read_metadata(p).num_rows for p in (out / ".stages" / "ingest").glob("interactions/*.parquet"))
    ]


def test_a_cut_runs_as_tasks_over_runs_of_row_groups_and_keeps_row_order(
    shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real MovieLens ratings in two files of 10 and 1 row groups, cut into 3 buckets by tasks of
    4 row groups in two worker processes: 4 tasks, and each bucket's pieces hold exactly the rows a
    plain filter of the whole table keeps, in the table's order; a second cut reuses the first."""
    import polars as pl

    from recgpt_data.hashing import bucket
    from recgpt_data.pipeline import shuffle

    ratings = pl.read_csv(
        shared / "movielens" / "ml-latest-small" / "ratings.csv", schema_overrides={"userId": pl.String}
    )
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    ratings.head(100_000).write_parquet(first, row_group_size=10_000)
    ratings.slice(100_000).write_parquet(second, row_group_size=10_000)
    assert [pq.read_metadata(p).num_row_groups for p in (first, second)] == [10, 1]
    monkeypatch.setattr(shuffle, "ROW_GROUPS_PER_TASK", 4)
    target = tmp_path / "cut"
    assert [(Path(t.path).name, t.row_groups) for t in shuffle.cut_tasks([first, second], "userId", 3, target)] == [
        ("a.parquet", (0, 1, 2, 3)),
        ("a.parquet", (4, 5, 6, 7)),
        ("a.parquet", (8, 9)),
        ("b.parquet", (0,)),
    ]
    engine = LocalEngine(workers=2, threads=1)
    try:
        cut = shuffle.split_by([first, second], "userId", 3, target, engine.map)
    finally:
        engine.close()
    assert len(cut) == 3 and all(1 <= len(pieces) <= 4 for pieces in cut)
    assert [p.name for p in cut[0]][0] == "part-00000-00000.parquet"
    for index, pieces in enumerate(cut):
        expected = ratings.filter(bucket(ratings["userId"], 3) == index)
        assert pl.read_parquet(list(pieces)).equals(expected)
    stamps = [p.stat().st_mtime_ns for pieces in cut for p in pieces]
    assert shuffle.split_by([first, second], "userId", 3, target) == cut
    assert [p.stat().st_mtime_ns for pieces in cut for p in pieces] == stamps


def test_a_cut_of_the_earlier_layout_is_cut_again(tmp_path: Path) -> None:
    """A folder holding a cut as an earlier version wrote it (one file a bucket, a record without
    its pieces) is cut again, not read as finished."""
    import polars as pl

    from recgpt_data.pipeline import shuffle

    table = tmp_path / "t.parquet"
    pl.DataFrame({"user_id": ["a", "b", "c", "d"], "n": [1, 2, 3, 4]}).write_parquet(table)
    target = tmp_path / "cut"
    target.mkdir()
    (target / "part-00000.parquet").write_bytes(table.read_bytes())
    (target / shuffle.DONE).write_text(json.dumps({"sources": [str(table)], "column": "user_id", "buckets": 1}))
    cut = shuffle.split_by([table], "user_id", 1, target)
    assert cut == [(target / "part-00000-00000.parquet",)]
    assert pl.read_parquet(list(cut[0])).equals(pl.read_parquet(table))


def sized_tasks(out: Path, key: str) -> list[dict]:
    """What each task of ``t_sized`` stage ``key`` noted it ran with."""
    return json.loads((out / ".stages" / key / "_SUCCESS.json").read_text())["stats"]["info"]["tasks"]


def test_a_stage_s_task_cpus_and_memory_reach_its_tasks_only(tmp_path: Path) -> None:
    """One process by default; a stage that declares ``task_cpus = 1`` and ``task_memory`` runs its
    buckets in workers of one thread, each watching its memory, while the stage after it, which
    declares nothing, runs in the driver again."""
    spec = worker_stages.sized_spec(tmp_path / "sized.toml", "", 'task_cpus = 1\ntask_memory = "1GiB"', "")
    out = tmp_path / "out"
    run_spec(load_spec(spec), out)
    assert (
        sized_tasks(out, "sized_1")
        == [{"spawned": True, "threads": "1", "polars": 1, "watched": True, "resources": None}] * 2
    )
    assert [(t["spawned"], t["watched"]) for t in sized_tasks(out, "sized_2")] == [(False, False)] * 2


def test_a_stage_s_task_memory_bounds_its_workers(tmp_path: Path) -> None:
    """A stage's ``task_memory = "512MiB"`` is the bound its tasks' workers keep: a bucket that
    allocates 1 GiB ends the run with the one line naming that bound, after ingest ran unbounded."""
    spec = worker_stages.sized_spec(tmp_path / "sized.toml", "", f'task_memory = "512MiB"\nparams.allocate = {2**30}')
    out = tmp_path / "out"
    with pytest.raises(WorkerCrash, match=r"^a task went past its worker's memory limit \(0\.50 GiB of resident"):
        run_spec(load_spec(spec), out)
    assert (out / ".stages" / "ingest" / "_SUCCESS.json").is_file()


def test_task_settings_change_no_output_and_no_fingerprint(tmp_path: Path) -> None:
    """Ingest and a stage declaring one CPU and 1 GiB write the bytes they write without: a fresh
    run with them gives the same tables, and over a run without them every stage is current."""
    plain = worker_stages.sized_spec(tmp_path / "plain.toml", "", "")
    sized = worker_stages.sized_spec(tmp_path / "sized.toml", "task_cpus = 1", 'task_cpus = 1\ntask_memory = "1GiB"')
    run_spec(load_spec(plain), tmp_path / "plain")
    run_spec(load_spec(sized), tmp_path / "sized")
    assert {t["threads"] for t in sized_tasks(tmp_path / "sized", "sized_1")} == {"1"}
    assert stage_tables(tmp_path / "sized") == stage_tables(tmp_path / "plain")
    again = run_spec(load_spec(sized), tmp_path / "plain")
    assert again.states == {"ingest": "cached", "sized_1": "cached"}
