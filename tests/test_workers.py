"""Local worker processes (``recgpt-data run --workers N``): the same bytes as one process, each
worker's libraries bounded to the threads it was given, and a dead worker reported in one line."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import worker_stages
from conftest import build, folder_digests

from recgpt_data.engines import get_engine
from recgpt_data.engines.local import LocalEngine
from recgpt_data.errors import UsageError

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


def test_two_workers_build_the_demo_byte_identical(demo_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = build("demo.toml", out, "--workers", "2")
    assert done.returncode == 0, done.stderr
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


def run_driver(spec: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    """``recgpt-data run SPEC --out OUT ARGS`` in a fresh interpreter that has the test stages."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-c", DRIVER, "run", str(spec), "--out", str(out), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_prepare_step_runs_its_tasks_on_the_engine_before_the_buckets(tmp_path: Path, workers: int) -> None:
    import json

    import pyarrow.parquet as pq

    spec = worker_stages.prepared_spec(tmp_path / "prepared.toml")
    out = tmp_path / "out"
    done = run_driver(spec, out, "--workers", str(workers))
    assert done.returncode == 0, done.stderr
    stages = out / ".stages"
    ingested = sum(pq.read_metadata(p).num_rows for p in (stages / "ingest").glob("interactions*.parquet"))
    counted = pq.read_table(sorted((stages / "t_prepared" / "counted").glob("part-*.parquet"))).to_pydict()
    assert ingested > 0 and set(counted["total"]) == {ingested}
    assert len(counted["user_id"]) == len(set(counted["user_id"]))
    info = json.loads((stages / "t_prepared" / "_SUCCESS.json").read_text())["stats"]["info"]
    if workers > 1:  # the prepare step's tasks ran in the worker processes, not in the driver
        assert info["prepare_pids"] and info["driver_pid"] not in info["prepare_pids"]
    assert not (out / ".scratch" / "t_prepared").exists()
