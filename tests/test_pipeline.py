"""The runner: specs, fingerprints, caching, --until / --only / --force, status, partitions, stats.

The pipeline runs the real ``ingest`` stage on the real Amazon 2018 Magazine Subscriptions sample,
then the small stages of ``pipeline_stages.py``; expected counts come from reading the raw JSON
lines with the standard library.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pipeline_stages
import polars as pl
import pytest
from raw_tree import FORMATS

from recgpt_data.errors import UsageError
from recgpt_data.pipeline.runner import run_spec, spec_status
from recgpt_data.pipeline.spec import load_spec

REPO = Path(__file__).resolve().parent.parent
ALL = ["ingest", "t_histories", "t_documents", "t_instruct", "t_write"]


@pytest.fixture(scope="module")
def raw(shared: Path) -> dict:
    """Independent counts from the raw files: reviews, items, users with >= 6 reviews."""
    reviews = [
        json.loads(line) for line in (shared / "amazon2018" / "Magazine_Subscriptions_5.json").read_text().splitlines()
    ]
    per_user = Counter(r["reviewerID"] for r in reviews)
    with gzip.open(shared / "amazon2018" / "meta_Magazine_Subscriptions.json.gz", "rt") as f:
        items = sum(1 for line in f if line.strip())
    return {
        "reviews": len(reviews),
        "items": items,
        "users": len(per_user),
        "kept_users": sum(1 for n in per_user.values() if n >= 6),
        "short_rows": sum(n for n in per_user.values() if n < 6),
    }


def write_spec(folder: Path, shared: Path, **kwargs) -> Path:
    path = folder / "spec.toml"
    path.write_text(pipeline_stages.spec_text(shared, **kwargs), encoding="utf-8")
    return path


def snapshot(out: Path) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every file under ``out`` but stats.json: what a rerun must not touch."""
    return {
        str(p.relative_to(out)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in out.rglob("*")
        if p.is_file() and p.name not in ("stats.json", "hash-cache.json")
    }


def test_run_counts_every_row(tmp_path: Path, shared: Path, raw: dict) -> None:
    spec = load_spec(write_spec(tmp_path, shared))
    result = run_spec(spec, tmp_path / "out")
    assert list(result.states.values()) == ["ran"] * 5
    stats = result.stats
    assert stats["ingest"]["rows_out"] == {"interactions": raw["reviews"], "items": raw["items"]}
    assert stats["t_histories"]["rows_in"] == {"interactions": raw["reviews"], "items": raw["items"]}
    assert stats["t_histories"]["rows_out"] == {"histories": raw["kept_users"]}
    assert stats["t_histories"]["dropped"] == {"short_history": raw["short_rows"]}
    assert result.tables["documents"].select(pl.len()).collect().item() == raw["kept_users"]
    train = pl.read_parquet(tmp_path / "out/data/pretrain/train-00000-of-00001.parquet")
    validation = pl.read_parquet(tmp_path / "out/data/pretrain/validation-00000-of-00001.parquet")
    assert train.height + validation.height == raw["kept_users"]
    written = json.loads((tmp_path / "out/stats.json").read_text())
    assert list(written["stages"]) == ALL
    for record in written["stages"].values():
        assert record["seconds"] >= 0
    assert written["stages"]["t_write"]["bytes_written"] == sum(
        p.stat().st_size for p in (tmp_path / "out/data").rglob("*.parquet")
    )


def test_partitioned_stage_matches_one_partition(tmp_path: Path, shared: Path) -> None:
    three = run_spec(load_spec(write_spec(tmp_path, shared, partitions=3)), tmp_path / "three")
    one_dir = tmp_path / "one"
    one_dir.mkdir()
    one = run_spec(load_spec(write_spec(one_dir, shared, partitions=1)), tmp_path / "one_out")
    parts = sorted((tmp_path / "three/.stages/t_histories/histories").glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    key = ["dataset", "user_id"]
    assert three.tables["documents"].collect().sort(key).equals(one.tables["documents"].collect().sort(key))


def test_rerun_does_no_work(tmp_path: Path, shared: Path) -> None:
    spec = load_spec(write_spec(tmp_path, shared))
    run_spec(spec, tmp_path / "out")
    before = snapshot(tmp_path / "out")
    again = run_spec(spec, tmp_path / "out")
    assert set(again.states.values()) == {"cached"}
    assert snapshot(tmp_path / "out") == before


def test_parameter_change_reruns_only_what_depends_on_it(tmp_path: Path, shared: Path) -> None:
    path = write_spec(tmp_path, shared)
    run_spec(load_spec(path), tmp_path / "out")
    path.write_text(
        path.read_text().replace('stage = "t_documents"', 'stage = "t_documents"\nparams.validation_fraction = 0.5')
    )
    result = run_spec(load_spec(path), tmp_path / "out")
    assert result.states == {
        "ingest": "cached",
        "t_histories": "cached",
        "t_documents": "ran",
        "t_instruct": "cached",
        "t_write": "ran",
    }


def test_force_reruns_everything_with_the_same_bytes(tmp_path: Path, shared: Path) -> None:
    spec = load_spec(write_spec(tmp_path, shared))
    run_spec(spec, tmp_path / "out")
    before = {p: p.read_bytes() for p in sorted((tmp_path / "out").rglob("*.parquet"))}
    result = run_spec(spec, tmp_path / "out", force=True)
    assert set(result.states.values()) == {"ran"}
    assert {p: p.read_bytes() for p in sorted((tmp_path / "out").rglob("*.parquet"))} == before


def test_until_stops_and_only_reruns_one_stage(tmp_path: Path, shared: Path) -> None:
    spec = load_spec(write_spec(tmp_path, shared))
    out = tmp_path / "out"
    result = run_spec(spec, out, until="t_histories")
    assert list(result.states) == ["ingest", "t_histories"]
    assert not (out / ".stages/t_documents").exists()
    with pytest.raises(UsageError, match="no cached output"):
        run_spec(spec, out, only="t_instruct")
    run_spec(spec, out)
    before = snapshot(out)
    only = run_spec(spec, out, only="t_documents")
    assert only.states == {"ingest": "cached", "t_histories": "cached", "t_documents": "ran"}
    after = snapshot(out)
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed and all(k.startswith(".stages/t_documents/") for k in changed)


def test_status_shows_done_stale_and_missing(tmp_path: Path, shared: Path) -> None:
    path = write_spec(tmp_path, shared)
    out = tmp_path / "out"
    assert {s.state for s in spec_status(load_spec(path), out)} == {"missing"}
    run_spec(load_spec(path), out, until="t_documents")
    states = {s.key: s.state for s in spec_status(load_spec(path), out)}
    assert states == {
        "ingest": "done",
        "t_histories": "done",
        "t_documents": "done",
        "t_instruct": "missing",
        "t_write": "missing",
    }
    path.write_text(path.read_text().replace("params.min_items = 6", "params.min_items = 7"))
    states = {s.key: s.state for s in spec_status(load_spec(path), out)}
    assert states["ingest"] == "done" and states["t_histories"] == "stale" and states["t_documents"] == "stale"
    path.write_text(path.read_text().replace("params.min_items = 7", "params.min_items = 6"))
    (out / ".stages/t_documents/documents/part-00001.parquet").unlink()
    states = {s.key: s.state for s in spec_status(load_spec(path), out)}
    assert states["t_histories"] == "done" and states["t_documents"] == "stale"


def test_status_and_run_agree_on_what_is_current(tmp_path: Path, shared: Path) -> None:
    """What status calls done is exactly what the next run keeps cached, after a partial run, a
    parameter change, and a lost output file of an upstream stage (rebuilt with the same bytes, so
    the stages after it stay current)."""
    path = write_spec(tmp_path, shared)
    out = tmp_path / "out"

    def status_then_run() -> dict[str, str]:
        done = {s.key for s in spec_status(load_spec(path), out) if s.state == "done"}
        states = run_spec(load_spec(path), out).states
        assert done == {key for key, state in states.items() if state == "cached"}
        return states

    run_spec(load_spec(path), out, until="t_documents")
    assert status_then_run() == dict(zip(ALL, ["cached"] * 3 + ["ran"] * 2, strict=True))
    path.write_text(
        path.read_text().replace('stage = "t_documents"', 'stage = "t_documents"\nparams.validation_fraction = 0.5')
    )
    assert status_then_run() == dict(zip(ALL, ["cached", "cached", "ran", "cached", "ran"], strict=True))
    (out / ".stages/t_histories/histories/part-00001.parquet").unlink()
    assert [s.state for s in spec_status(load_spec(path), out)] == ["done", "stale", "done", "done", "done"]
    assert status_then_run() == dict(zip(ALL, ["cached", "ran", "cached", "cached", "cached"], strict=True))


def test_raw_input_content_not_mtime_decides(tmp_path: Path, shared: Path) -> None:
    raw = tmp_path / "raw" / "amazon2018"
    shutil.copytree(shared / "amazon2018", raw)
    spec_path = write_spec(tmp_path, tmp_path / "raw")
    out = tmp_path / "out"
    run_spec(load_spec(spec_path), out, until="ingest")
    review = raw / "Magazine_Subscriptions_5.json"
    review.touch()
    assert [s.state for s in spec_status(load_spec(spec_path), out)][0] == "done"
    lines = review.read_text().splitlines(keepends=True)
    review.write_text("".join(lines[:-1]))
    assert [s.state for s in spec_status(load_spec(spec_path), out)][0] == "stale"
    result = run_spec(load_spec(spec_path), out, until="ingest")
    assert result.stats["ingest"]["rows_out"]["interactions"] == len(lines) - 1


def test_stats_name_inputs_as_the_spec_declares_them(tmp_path: Path, shared: Path) -> None:
    """Two copies of a project whose spec names its raw files relative to itself: their stats.json
    agree but for timings, and name each input file, read or skipped, as the spec's path to it."""
    found = []
    for copy in ("one", "two"):
        root = tmp_path / copy
        (root / "raw" / "meta").mkdir(parents=True)
        shutil.copy(shared / "amazon2018" / "Magazine_Subscriptions_5.json", root / "raw")
        shutil.copy(shared / "amazon2018" / "meta_Magazine_Subscriptions.json.gz", root / "raw" / "meta")
        (root / "raw" / "meta" / "README.txt").write_text("notes\n")
        paths = '["raw/Magazine_Subscriptions_5.json", "raw/meta/"]'
        source = f'{{ format = "amazon2018", paths = {paths} }}'
        (root / "spec.toml").write_text(f'name = "m"\n[[stages]]\nstage = "ingest"\nparams.sources = [{source}]\n')
        run_spec(load_spec(root / "spec.toml"), root / "out")
        found.append(json.loads((root / "out" / "stats.json").read_text()))
    (source,) = found[0]["stages"]["ingest"]["info"]["sources"]
    assert [f["file"] for f in source["files"]] == [
        "raw/Magazine_Subscriptions_5.json",
        "raw/meta/meta_Magazine_Subscriptions.json.gz",
    ]
    assert source["skipped"] == ["raw/meta/README.txt"]
    for document in found:
        for stats in document["stages"].values():
            del stats["seconds"], stats["bytes_written"]
    assert found[0] == found[1]


def test_vars_override_paths(tmp_path: Path, shared: Path) -> None:
    spec = load_spec(write_spec(tmp_path, Path("/nowhere")), {"raw": str(shared / "amazon2018")})
    assert spec.stages[0].params["sources"][0]["paths"][0] == f"{shared}/amazon2018/Magazine_Subscriptions_5.json"
    with pytest.raises(UsageError, match="not defined"):
        path = tmp_path / "bad.toml"
        path.write_text(
            'name = "x"\n[[stages]]\nstage = "ingest"\nparams.sources = [{ format = "amazon2018", paths = ["${nope}"] }]\n'
        )
        load_spec(path)


def test_vars_refer_to_vars_and_cycles_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "vars.toml"
    stage = '[[stages]]\nstage = "ingest"\nparams.sources = [{ format = "amazon2018", paths = ["${sub}"] }]\n'
    path.write_text('name = "x"\n[vars]\nraw = "/a"\nsub = "${raw}/b"\n' + stage)
    assert load_spec(path).stages[0].params["sources"][0]["paths"] == ["/a/b"]
    assert load_spec(path, {"raw": "/c"}).stages[0].params["sources"][0]["paths"] == ["/c/b"]
    path.write_text('name = "x"\n[vars]\nraw = "${sub}"\nsub = "${raw}/b"\n' + stage)
    with pytest.raises(UsageError, match="cycle"):
        load_spec(path)


def test_local_engine_never_imports_ray(tmp_path: Path, shared: Path) -> None:
    spec = write_spec(tmp_path, shared)
    code = (
        "import sys, pipeline_stages\n"
        "from recgpt_data.pipeline.runner import run_spec\n"
        "from recgpt_data.pipeline.spec import load_spec\n"
        f"run_spec(load_spec({str(spec)!r}), {str(tmp_path / 'out')!r})\n"
        "print('ray' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    assert (tmp_path / "out/data/pretrain/train-00000-of-00001.parquet").is_file()


def test_bad_specs_are_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[[stages]]\nstage = "no_such_stage"\n')
    with pytest.raises(UsageError, match="unknown stage 'no_such_stage'"):
        run_spec(load_spec(path), tmp_path / "out")
    path.write_text('name = "x"\n[[stages]]\nstage = "t_documents"\n')
    with pytest.raises(UsageError, match="reads histories, which no earlier stage writes"):
        run_spec(load_spec(path), tmp_path / "out")


def test_a_stage_declares_its_task_cpus_and_memory(tmp_path: Path) -> None:
    """``task_cpus`` and ``task_memory`` (a size as ``--task-memory`` reads it, or bytes, or a var)
    on a stage entry; a stage without them leaves both to the run's flags."""
    path = tmp_path / "sized.toml"
    path.write_text(
        'name = "x"\n[vars]\nmemory = "4GiB"\n[[stages]]\nstage = "ingest"\ntask_cpus = 2\n'
        'task_memory = "${memory}"\n[[stages]]\nstage = "kcore"\ntask_cpus = 0.5\ntask_memory = 1500\n'
        '[[stages]]\nstage = "split"\n'
    )
    stages = load_spec(path).stages
    assert [(s.task_cpus, s.task_memory) for s in stages] == [(2, 4 * 2**30), (0.5, 1500), (None, None)]
    assert load_spec(path, {"memory": "500M"}).stages[0].task_memory == 500 * 10**6


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ("task_cpus = 0", "stages.0.task_cpus: Input should be greater than 0 (got 0)"),
        ("task_cpus = -1.5", "stages.0.task_cpus: Input should be greater than 0 (got -1.5)"),
        ('task_memory = "4Q"', "stages.0.task_memory: '4Q' is not a size: want bytes or a number with K, M, G"),
        ('task_memory = "0.1B"', "stages.0.task_memory: a size must be at least one byte, got '0.1B'"),
        ("task_memory = 0", "stages.0.task_memory: Input should be greater than or equal to 1 (got 0)"),
    ],
)
def test_bad_task_settings_are_one_line_at_load(tmp_path: Path, entry: str, said: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'name = "x"\n[[stages]]\nstage = "ingest"\n{entry}\n')
    with pytest.raises(UsageError) as refused:
        load_spec(path)
    assert str(refused.value).startswith(f"{path}: invalid pipeline spec: {said}")
    assert "\n" not in str(refused.value)


PRODUCTION_STAGES = [
    "ingest",
    "p5_benchmark",
    "clean_items",
    "clean",
    "cross_release",
    "hold_out",
    "filter_users",
    "split",
    "pretrain_documents",
    "write_pretrain",
    "pretrain_tokens",
    "instruct_pairs",
    "write_instruct",
    "report",
    "card",
]


def test_production_spec_loads() -> None:
    from recgpt_data import stages

    spec = load_spec(REPO / "pipelines" / "recgpt.toml", {"raw": "/data/raw"})
    assert spec.name == "recgpt"
    assert [s.stage for s in spec.stages] == PRODUCTION_STAGES
    sources = spec.stages[0].params["sources"]
    assert sources[0]["paths"] == ["/data/raw/amazon2018"]
    formats = {s["format"] for s in sources}
    assert formats == FORMATS
    for stage_spec in spec.stages:
        stages.get(stage_spec.stage).params(**stage_spec.params)


def test_a_second_run_on_the_same_folder_is_refused(tmp_path: Path, shared: Path) -> None:
    from recgpt_data.pipeline.runner import Runner

    spec = load_spec(write_spec(tmp_path, shared))
    with Runner(spec, tmp_path / "out").lock(), pytest.raises(UsageError, match="another run is writing"):
        run_spec(spec, tmp_path / "out")
    assert run_spec(spec, tmp_path / "out", until="ingest").states == {"ingest": "ran"}


def test_cli_flags(tmp_path: Path, shared: Path) -> None:
    from typer.testing import CliRunner

    from recgpt_data.cli import app

    spec = str(write_spec(tmp_path, shared))
    out = str(tmp_path / "out")
    runner = CliRunner()
    done = runner.invoke(app, ["run", spec, "--out", out, "--until", "t_histories"])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "out/.stages/t_histories/_SUCCESS.json").is_file()
    assert not (tmp_path / "out/.stages/t_documents").exists()
    again = runner.invoke(app, ["run", spec, "--out", out, "--only", "t_histories", "--force"])
    assert again.exit_code == 0, again.output
    bad = runner.invoke(app, ["run", spec, "--out", out, "--engine", "spark"])
    assert isinstance(bad.exception, UsageError) and "unknown engine 'spark'" in str(bad.exception)
    bad = runner.invoke(app, ["run", spec, "--out", out, "--address", "auto"])
    assert isinstance(bad.exception, UsageError) and "--address is for --engine ray" in str(bad.exception)


def test_force_recomputes_every_bucket(tmp_path: Path, shared: Path) -> None:
    spec = load_spec(write_spec(tmp_path, shared))
    run_spec(spec, tmp_path / "out")
    parts = tmp_path / "out/.stages/t_histories/_parts"
    before = {p.name: p.stat().st_mtime_ns for p in parts.iterdir()}
    run_spec(spec, tmp_path / "out", force=True)
    after = {p.name: p.stat().st_mtime_ns for p in parts.iterdir()}
    assert before.keys() == after.keys() and all(after[k] != before[k] for k in before)


EDITED_STAGE = '''
import polars as pl
from recgpt_data.stage import Params, StageOutput, StageStats, stage


@stage("t_user_counts", params=Params, reads=("interactions",), writes=("user_counts",))
def user_counts(tables, params, ctx):
    """Interactions per user."""
    counts = tables["interactions"].group_by("user_id").agg(pl.len()).sort("user_id")
    return StageOutput({"user_counts": counts}, StageStats())
'''


def test_editing_a_stage_module_makes_it_stale(tmp_path: Path, shared: Path, raw: dict) -> None:
    import importlib.util

    from recgpt_data.pipeline.fingerprint import source_sha256

    module = tmp_path / "edited_stage.py"
    module.write_text(EDITED_STAGE)
    found = importlib.util.spec_from_file_location("edited_stage", module)
    found.loader.exec_module(importlib.util.module_from_spec(found))
    text = pipeline_stages.spec_text(shared).split('[[stages]]\nstage = "t_histories"')[0]
    path = tmp_path / "spec.toml"
    path.write_text(text + '[[stages]]\nstage = "t_user_counts"\n')
    result = run_spec(load_spec(path), tmp_path / "out")
    assert result.stats["t_user_counts"]["rows_out"] == {"user_counts": raw["users"]}
    module.write_text(EDITED_STAGE + "\n# counted per user, all datasets together\n")
    source_sha256.cache_clear()
    assert [(s.key, s.state) for s in spec_status(load_spec(path), tmp_path / "out")] == [
        ("ingest", "done"),
        ("t_user_counts", "stale"),
    ]


def test_editing_a_helper_module_a_stage_imports_changes_its_fingerprint(tmp_path: Path, monkeypatch) -> None:
    import importlib

    from recgpt_data.pipeline.fingerprint import source_sha256

    package = tmp_path / "helperpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text("WORD = 'a'\n")
    (package / "unrelated.py").write_text("X = 1\n")
    (package / "staged.py").write_text("from helperpkg.helper import WORD\n\ndef fn():\n    return WORD\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = importlib.import_module("helperpkg.staged").fn
    before = source_sha256(fn)
    (package / "unrelated.py").write_text("X = 2\n")
    source_sha256.cache_clear()
    assert source_sha256(fn) == before
    (package / "helper.py").write_text("WORD = 'b'\n")
    source_sha256.cache_clear()
    assert source_sha256(fn) != before
