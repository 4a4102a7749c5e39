"""The Dagster asset factory: one asset per stage, dependencies from the tables each stage reads,
and materialising them builds the same outputs as the runner."""

from __future__ import annotations

from pathlib import Path

import pipeline_stages
import pytest

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
    rows = materialised["t_histories"].event_specific_data.materialization.metadata["rows_out"].value
    assert rows == reference.stats["t_histories"]["rows_out"]
