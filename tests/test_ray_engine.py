"""The Ray engine on a real local Ray cluster: the same spec gives the same bytes as the local engine."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pipeline_stages
import pytest

from recgpt_data.engines import get_engine
from recgpt_data.pipeline.runner import run_spec
from recgpt_data.pipeline.spec import load_spec

ray = pytest.importorskip("ray")
TESTS = Path(__file__).resolve().parent


def files(out: Path) -> dict[str, bytes]:
    """Every data file the runs must agree on: stage tables and the final folder's parquet."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}


def test_ray_output_equals_local_byte_for_byte(tmp_path: Path, shared: Path) -> None:
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(pipeline_stages.spec_text(shared, partitions=4), encoding="utf-8")
    spec = load_spec(spec_path)
    local = run_spec(spec, tmp_path / "local")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(TESTS)}},
    )
    try:
        engine = get_engine("ray")
        assert engine.name == "ray"
        remote = run_spec(spec, tmp_path / "ray", engine=engine)
        engine.close()
    finally:
        ray.shutdown()
    here = f"{socket.gethostname()}:{os.getpid()}"
    for key in ("t_histories", "t_documents", "t_instruct"):
        workers = [
            json.loads(p.read_text())["worker"] for p in (tmp_path / "ray/.stages" / key / "_parts").glob("*.json")
        ]
        assert len(workers) == 4 and here not in workers
    assert len([k for k in files(tmp_path / "ray") if k.startswith(".stages/t_") and "/part-" in k]) == 4 * 3
    assert len([k for k in files(tmp_path / "ray") if "/_buckets/interactions-4/" in k]) == 4
    assert files(tmp_path / "ray") == files(tmp_path / "local")
    for key in ("t_histories", "t_documents", "t_instruct"):
        assert remote.stats[key]["rows_out"] == local.stats[key]["rows_out"]
        assert remote.stats[key]["dropped"] == local.stats[key]["dropped"]
