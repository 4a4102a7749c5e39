"""The Dagster asset factory: one asset per stage, dependencies from the tables each stage reads;
materialising one asset builds it and what it needs, materialising them all builds the same outputs
as the runner, and the asset checks read the stage stats."""

from __future__ import annotations

import json
from pathlib import Path

import pipeline_stages
import polars as pl
import pytest
from conftest import REPO, folder_digests

from recgpt_data.pipeline.runner import run_spec
from recgpt_data.pipeline.spec import load_spec

dg = pytest.importorskip("dagster")


def test_assets_follow_the_spec_and_materialise_it(tmp_path: Path, shared: Path) -> None:
    from recgpt_data.integrations.dagster import assets

    spec = tmp_path / "spec.toml"
    spec.write_text(pipeline_stages.spec_text(shared), encoding="utf-8")
    built = assets(spec, tmp_path / "dagster")
    keys = [a.key.to_user_string() for a in built]
    assert keys == ["ingest", "t_histories", "t_documents", "t_instruct", "t_write"]
    deps = {a.key.to_user_string(): sorted(k.to_user_string() for k in a.dependency_keys) for a in built}
    assert deps == {
        "ingest": [],
        "t_histories": ["ingest"],
        "t_documents": ["t_histories"],
        "t_instruct": ["t_histories"],
        "t_write": ["t_documents", "t_instruct"],
    }
    result = dg.materialize(built)
    assert result.success
    materialised = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
    assert set(materialised) == set(keys)
    reference = run_spec(load_spec(spec), tmp_path / "runner")
    for name in ("train", "validation"):
        relative = f"data/pretrain/{name}-00000-of-00001.parquet"
        assert (tmp_path / "dagster" / relative).read_bytes() == (tmp_path / "runner" / relative).read_bytes()
    metadata = materialised["t_histories"].event_specific_data.materialization.metadata
    assert metadata["rows_out"].value == reference.stats["t_histories"]["rows_out"]
    reviews = [
        json.loads(line) for line in (shared / "amazon2018/Magazine_Subscriptions_5.json").read_text().splitlines()
    ]
    users: dict[str, int] = {}
    for review in reviews:
        users[review["reviewerID"]] = users.get(review["reviewerID"], 0) + 1
    long = sum(1 for n in users.values() if n >= 6)
    assert metadata["rows_per_dataset"].value == {"histories": {"amazon2018/Magazine_Subscriptions": long}}


def test_one_asset_builds_what_it_needs_and_all_build_the_demo(demo_corpus: Path, tmp_path: Path) -> None:
    """``instruct_pairs`` alone on an empty folder runs its upstream stages and not the pre-training
    ones; then every asset of the demo spec materialises, checks pass, and the folder is the CLI's."""
    from recgpt_data.integrations.dagster import assets

    out = tmp_path / "out"
    built = assets(REPO / "pipelines/demo.toml", out)
    keys = [a.key.to_user_string() for a in built]
    alone = dg.materialize(built, selection=["instruct_pairs"])
    assert alone.success
    (event,) = alone.get_asset_materialization_events()
    ran = event.event_specific_data.materialization.metadata["stages_run"].value
    assert ran[-1] == "instruct_pairs" and {"ingest", "split"} <= set(ran)
    assert not {"pretrain_documents", "write_pretrain", "report", "card"} & set(ran)
    assert not (out / "data").exists() and not (out / ".stages/pretrain_documents").exists()
    everything = dg.materialize(built)
    assert everything.success
    checks = everything.get_asset_check_evaluations()
    assert len(checks) == 2 * len(keys) and all(c.passed for c in checks if c.check_name == "dropped_rows_kept")
    assert folder_digests(out) == folder_digests(demo_corpus)


def test_drops_check_fails_when_counts_and_kept_rows_differ(demo_corpus: Path) -> None:
    from recgpt_data.integrations.dagster import drops_check
    from recgpt_data.pipeline.store import Store

    stats = json.loads((demo_corpus / "stats.json").read_text())["stages"]["clean"]
    kept = pl.scan_parquet(
        sorted((demo_corpus / ".stages/clean").glob("dropped_interactions*/**/*.parquet"))
        or sorted((demo_corpus / ".stages/clean").glob("dropped_interactions*.parquet"))
    )
    reasons = dict(kept.group_by("drop_reason").agg(pl.len()).collect().iter_rows())
    store = Store(demo_corpus)
    marker = store.marker("clean")
    assert drops_check(store, marker, {"dropped": reasons}).passed
    off = {reason: n + 1 for reason, n in reasons.items()}
    failed = drops_check(store, marker, {"dropped": off})
    assert not failed.passed
    assert failed.metadata["mismatched"].value == {r: {"counted": n + 1, "kept": n} for r, n in reasons.items()}
    assert stats["dropped"]["interaction_item_without_title"] == reasons["interaction_item_without_title"]
