"""The operations side of the CLI: unknown --var, status's default folder, Ray without a cluster,
progress in rows, the run summary at 80 columns and dropped rows shown field by field."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import tomllib
from collections import Counter
from pathlib import Path

import pipeline_stages
import polars as pl
import pytest
from conftest import CLI, REPO
from rich.console import Console
from rich.progress import TimeElapsedColumn, TimeRemainingColumn

from recgpt_data.pipeline.runner import run_spec
from recgpt_data.pipeline.spec import load_spec

DEMO = REPO / "pipelines" / "demo.toml"
WIDE = {**os.environ, "COLUMNS": "200"}


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=WIDE)


def magazine_reviews(shared: Path) -> list[dict]:
    path = shared / "amazon2018" / "Magazine_Subscriptions_5.json"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_an_unknown_var_is_an_error() -> None:
    done = cli("status", str(DEMO), "--var", "nosuchvar=1")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: --var nosuchvar: not in the [vars] of {DEMO} (declared: none)"]
    samples = REPO / "pipelines" / "samples.toml"
    declared = ", ".join(sorted(tomllib.loads(samples.read_text())["vars"]))
    done = cli("status", str(samples), "--var", "shraed=/data")
    assert done.returncode == 2 and f"(declared: {declared})" in done.stderr


def test_status_finds_the_default_out(demo_corpus: Path, tmp_path: Path) -> None:
    """A project laid out as pipelines/demo.toml and out/demo: status without --out, from another
    folder, finds the run beside the spec and says where it looked."""
    project = tmp_path / "project"
    (project / "pipelines").mkdir(parents=True)
    shutil.copy(DEMO, project / "pipelines" / "demo.toml")
    shutil.copytree(demo_corpus, project / "out" / "demo")
    keys = [s.get("id", s["stage"]) for s in tomllib.loads(DEMO.read_text())["stages"]]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = cli("status", str(project / "pipelines" / "demo.toml"), cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"demo in {project}/out/demo"
    cells = [line.split() for line in done.stdout.splitlines()]
    states = {c[1]: c[3] for c in cells if len(c) > 3 and c[1] in keys}  # "│ ingest │ done │ 0.4 s │"
    assert states == dict.fromkeys(keys, "done")
    bare = tmp_path / "bare" / "pipelines"  # a project with no run anywhere (the checkout may hold out/demo)
    bare.mkdir(parents=True)
    shutil.copy(DEMO, bare / "demo.toml")
    empty = cli("status", str(bare / "demo.toml"), cwd=elsewhere)
    assert empty.stdout.splitlines()[0] == "demo in out/demo" and "done" not in empty.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("scheme", ["ray://", ""])
def test_ray_without_a_cluster_is_one_line(scheme: str, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    port = free_port()
    address = f"{scheme}127.0.0.1:{port}"
    done = cli("run", str(DEMO), "--out", str(tmp_path / "out"), "--engine", "ray", "--address", address)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: no Ray cluster at {address}: 127.0.0.1:{port} Connection refused; start one (`ray start --head`) "
        "or leave out --address to run Ray on this machine"
    ]
    assert not (tmp_path / "out").exists()


class Recorder:
    """A reporter that keeps what the runner told it."""

    def __init__(self) -> None:
        self.started: dict[str, tuple[int, int]] = {}
        self.done: Counter[str] = Counter()

    def stage_started(self, key: str, parts: int, rows: int) -> None:
        self.started[key] = (parts, rows)

    def part_done(self, key: str, rows: int) -> None:
        self.done[key] += rows

    def stage_finished(self, key: str, state: str, stats: dict) -> None:
        return None


@pytest.fixture(scope="module")
def magazines(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Recorder, object]:
    """The magazines spec run once with a recording reporter: (what it heard, the run's result)."""
    folder = tmp_path_factory.mktemp("magazines")
    (folder / "spec.toml").write_text(pipeline_stages.spec_text(shared), encoding="utf-8")
    recorder = Recorder()
    result = run_spec(load_spec(folder / "spec.toml"), folder / "out", reporter=recorder)
    return recorder, result


def test_progress_counts_rows(magazines: tuple[Recorder, object], shared: Path) -> None:
    """Bucketed stages report the rows of their bucketed tables bucket by bucket; whole stages their
    input rows; and the progress display shows rows, buckets, a rate and time left."""
    from recgpt_data.cli import RichReporter
    from recgpt_data.display import run_progress

    recorder, _ = magazines
    reviews = len(magazine_reviews(shared))
    assert recorder.started["t_histories"] == (3, reviews)  # the items table is read whole, not counted
    assert recorder.done["t_histories"] == reviews
    assert recorder.started["ingest"] == (1, 0)
    progress = run_progress(Console(file=io.StringIO(), width=120))
    reporter = RichReporter(progress)
    reporter.stage_started("dedup", 4, 1_500)
    reporter.part_done("dedup", 600)
    (task,) = progress.tasks
    shown = [str(column.render(task)) for column in progress.columns[2:4]]
    assert shown[0] == "600/1,500 rows (1/4 buckets)"
    assert shown[1].endswith(" rows/s")
    assert [type(c) for c in progress.columns[4:]] == [TimeRemainingColumn, TimeElapsedColumn]


def test_run_summary_fits_80_columns(magazines: tuple[Recorder, object], shared: Path) -> None:
    from recgpt_data.display import summary_table

    _, result = magazines
    console = Console(file=io.StringIO(), width=80, record=True)
    console.print(summary_table("magazines -> out", result.stats, result.states))
    lines = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines) and "…" not in "".join(lines)
    per_user = Counter(r["reviewerID"] for r in magazine_reviews(shared))
    rows = {line.split()[0]: line.split() for line in lines if line.split()[:1] and line.split()[0].startswith("t_")}
    assert set(rows) == {"t_histories", "t_documents", "t_instruct", "t_write"}
    assert rows["t_histories"][3:5] == ["histories", f"{sum(1 for n in per_user.values() if n >= 6):,}"]
    assert rows["t_histories"][5] == f"{sum(n for n in per_user.values() if n < 6):,}"


def test_dropped_show_prints_every_field(demo_corpus: Path) -> None:
    """Each sampled dropped row is shown with every field that has a value, not a frame cut to fit."""
    done = cli("dropped", str(demo_corpus), "--stage", "clean", "--show", "2")
    assert done.returncode == 0, done.stderr
    (folder,) = [p for p in (demo_corpus / ".stages" / "clean").iterdir() if p.name.startswith("dropped_interactions")]
    kept = pl.read_parquet(sorted(folder.rglob("*.parquet")) if folder.is_dir() else folder).head(2)
    assert "clean / interactions (2 shown)" in done.stdout
    for index, row in enumerate(kept.iter_rows(named=True), start=1):
        assert f"  {index}. {row['drop_reason']}" in done.stdout
        for name, value in row.items():
            if value is not None and name != "drop_reason":
                assert f"     {name}: {str(value).replace(chr(10), chr(92) + 'n')[:60]}" in done.stdout, name


def test_blanked_rows_show_their_original_text(shared: Path) -> None:
    """A review blanked for its language, kept by ``stage.blanked`` with its original text, is shown
    with that text (cut at its length past 300 characters, which are said)."""
    from recgpt_data.display import show_rows
    from recgpt_data.stage import BLANK_REASON, blanked

    review = next(
        json.loads(line)
        for line in (shared / "amazon2018/Magazine_Subscriptions_5.json").open()
        if len(json.loads(line).get("reviewText", "")) > 300
    )
    frame = pl.DataFrame(
        {
            "source": ["amazon2018"],
            "dataset": ["amazon2018/Magazine_Subscriptions"],
            "user_id": [review["reviewerID"]],
            "item_id": [review["asin"]],
            "review_text": [review["reviewText"]],
        }
    )
    kept = blanked(frame, "review_text", "language_not_allowed")
    console = Console(file=io.StringIO(), width=80, record=True)
    show_rows(console, "langid / interactions", kept, BLANK_REASON)
    text = console.export_text()
    assert "  1. language_not_allowed" in text and f"user_id: {review['reviewerID']}" in text
    original = review["reviewText"].replace("\n", "\\n")
    assert f"{original[:300]}… ({len(original):,} chars)" in text.replace("\n", "")
