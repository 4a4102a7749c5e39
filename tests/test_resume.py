"""Crash and resume: the CLI is killed for real (SIGKILL) at named points inside and between stages,
then rerun; the result must be byte-identical to a run that was never interrupted, and no partial
file may be visible in between."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pipeline_stages
import pyarrow.parquet as pq
import pytest

TESTS = Path(__file__).resolve().parent
TAIL = '\n[[stages]]\nstage = "card"\nparams.repo_id = "acme/magazines"\n'
DRIVER = (
    "import sys, pipeline_stages; from recgpt_data.cli import main; sys.argv = ['recgpt-data', *sys.argv[1:]]; main()"
)
VOLATILE = ("_SUCCESS.json", "hash-cache.json", "stats.json")


def cli(*args: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    """Run ``recgpt-data`` (with the test stages registered) in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(TESTS), "MPLBACKEND": "Agg"}
    env.pop("RECGPT_KILL_AT", None)
    if kill_at:
        env["RECGPT_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-c", DRIVER, *args], env=env, capture_output=True, text=True, timeout=120)


def contents(out: Path) -> dict[str, bytes]:
    """Every file's bytes, but the records that hold timings; stats.json without its timings and
    the workers that ran whole stages and prepare steps (processes of whichever run ran them)."""
    files = {}
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out).as_posix()
        if not path.is_file() or path.name in VOLATILE or "/_parts/" in relative:
            continue
        files[relative] = path.read_bytes()
    stats = json.loads((out / "stats.json").read_text())
    for record in stats["stages"].values():
        record.pop("seconds")
        record.pop("worker", None)
        record.pop("prepare_workers", None)
    files["stats.json"] = json.dumps(stats, sort_keys=True).encode()
    return files


@pytest.fixture(scope="module")
def spec(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "spec.toml"
    path.write_text(pipeline_stages.spec_text(shared) + TAIL, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(spec: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("reference") / "out"
    done = cli("run", str(spec), "--out", str(out))
    assert done.returncode == 0, done.stderr
    return contents(out)


def assert_nothing_partial(out: Path) -> None:
    """No temporary file in the final folder, and every visible parquet file is whole."""
    final = [p for p in out.rglob("*") if p.is_file() and ".stages" not in p.parts and ".scratch" not in p.parts]
    assert not [p for p in final if p.name.endswith(".tmp")]
    for path in out.rglob("*.parquet"):
        pq.read_metadata(path)


@pytest.mark.parametrize(
    "point",
    [
        "stage:ingest:mid",
        "stage:t_histories:mid",
        "stage:t_documents:after",
        "stage:t_write:publish",
        "stage:card:before",
    ],
)
def test_killed_run_resumes_to_identical_output(point: str, spec: Path, reference: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    killed = cli("run", str(spec), "--out", str(out), kill_at=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert_nothing_partial(out)
    _, key, _ = point.split(":")
    assert not (out / ".stages" / key / "_SUCCESS.json").exists() or point.endswith(":after")
    resumed = cli("run", str(spec), "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert contents(out) == reference


def test_killed_partitioned_stage_keeps_finished_buckets(spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    killed = cli("run", str(spec), "--out", str(out), kill_at="stage:t_histories:mid")
    assert killed.returncode == -signal.SIGKILL
    parts = out / ".stages/t_histories/_parts"
    assert [p.name for p in parts.iterdir()] == ["00000.json"]
    first = (out / ".stages/t_histories/histories/part-00000.parquet").stat().st_mtime_ns
    assert not (out / ".stages/t_histories/histories/part-00001.parquet").exists()
    assert cli("run", str(spec), "--out", str(out)).returncode == 0
    assert (out / ".stages/t_histories/histories/part-00000.parquet").stat().st_mtime_ns == first
    assert sorted(p.name for p in parts.iterdir()) == ["00000.json", "00001.json", "00002.json"]


def test_status_after_a_kill(spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cli("run", str(spec), "--out", str(out), kill_at="stage:t_instruct:before")
    shown = cli("status", str(spec), "--out", str(out))
    assert shown.returncode == 0, shown.stderr
    lines = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in shown.stdout.splitlines()
        if line.count("│") >= 3
    }
    assert lines == {
        "ingest": "done",
        "t_histories": "done",
        "t_documents": "done",
        "t_instruct": "missing",
        "t_write": "missing",
        "card": "missing",
    }


def test_a_kill_point_that_names_nothing_is_refused(spec: Path, tmp_path: Path) -> None:
    done = cli("run", str(spec), "--out", str(tmp_path / "out"), kill_at="stage:t_histories:middle")
    assert done.returncode == 2
    assert "RECGPT_KILL_AT='stage:t_histories:middle'" in done.stderr


def test_killed_run_with_workers_resumes_to_identical_output(spec: Path, reference: dict, tmp_path: Path) -> None:
    """A run in two worker processes killed after its first bucket; resumed, the same bytes."""
    out = tmp_path / "out"
    killed = cli("run", str(spec), "--out", str(out), "--workers", "2", kill_at="stage:t_histories:mid")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert_nothing_partial(out)
    resumed = cli("run", str(spec), "--out", str(out), "--workers", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert contents(out) == reference
