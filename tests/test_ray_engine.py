"""The Ray engine on a real local Ray cluster: the same spec gives the same bytes as the local engine."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pipeline_stages
import pytest
import worker_stages
from conftest import folder_digests

from recgpt_data.engines import get_engine
from recgpt_data.pipeline.runner import run_spec
from recgpt_data.pipeline.spec import load_spec

ray = pytest.importorskip("ray")
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def files(out: Path) -> dict[str, bytes]:
    """Every data file the runs must agree on: stage tables and the final folder's parquet."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def cluster() -> None:
    """A real local Ray cluster of 2 CPUs for the module's tests; its workers can import the test stages."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(TESTS)}},
    )
    yield
    ray.shutdown()


def run_on_ray(spec_path: Path, out: Path):
    engine = get_engine("ray")
    assert engine.name == "ray"
    try:
        return run_spec(load_spec(spec_path), out, engine=engine)
    finally:
        engine.close()


def workers_of(out: Path, key: str) -> list[str]:
    """Which process on which host ran each bucket of stage ``key``."""
    return [json.loads(p.read_text())["worker"] for p in (out / ".stages" / key / "_parts").glob("*.json")]


def test_ray_output_equals_local_byte_for_byte(cluster, tmp_path: Path, shared: Path) -> None:
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(pipeline_stages.spec_text(shared, partitions=4), encoding="utf-8")
    local = run_spec(load_spec(spec_path), tmp_path / "local")
    remote = run_on_ray(spec_path, tmp_path / "ray")
    here = f"{socket.gethostname()}:{os.getpid()}"
    for key in ("t_histories", "t_documents", "t_instruct"):
        workers = workers_of(tmp_path / "ray", key)
        assert len(workers) == 4 and here not in workers
    assert len([k for k in files(tmp_path / "ray") if k.startswith(".stages/t_") and "/part-" in k]) == 4 * 3
    cut = [k.rsplit("/", 1)[1] for k in files(tmp_path / "ray") if "/_buckets/interactions-user_id-4/" in k]
    assert {name[: len("part-00000")] for name in cut} == {f"part-{i:05d}" for i in range(4)}  # pieces of each bucket
    assert files(tmp_path / "ray") == files(tmp_path / "local")
    for key in ("t_histories", "t_documents", "t_instruct"):
        assert remote.stats[key]["rows_out"] == local.stats[key]["rows_out"]
        assert remote.stats[key]["dropped"] == local.stats[key]["dropped"]


def test_demo_corpus_built_on_ray_equals_the_local_build(cluster, demo_corpus: Path, tmp_path: Path) -> None:
    """The README's main job with ``--engine ray``: the partitioned stages run in Ray workers and the
    whole folder (shards, benchmarks, exports, manifest, card, report) has the same bytes."""
    run_on_ray(REPO / "pipelines" / "demo.toml", tmp_path / "ray")
    here = f"{socket.gethostname()}:{os.getpid()}"
    for key in ("split", "pretrain_documents"):
        workers = workers_of(tmp_path / "ray", key)
        assert len(workers) == 2 and here not in workers
    assert folder_digests(tmp_path / "ray") == folder_digests(demo_corpus)


def test_tasks_declare_their_resources_and_bound_their_threads(cluster) -> None:
    """One CPU and 256 MiB declared: Ray assigns them to each task, and polars, numba and tokenizers
    use one thread there (two by default on this cluster's machine)."""
    engine = get_engine("ray", task_cpus=1, task_memory=256 * 2**20)
    try:
        found = list(engine.map(worker_stages.ray_probe, range(2)))
    finally:
        engine.close()
    assert {os.getpid()} & {f["pid"] for f in found} == set()
    assert [f["resources"] for f in found] == [{"CPU": 1.0, "memory": 256.0 * 2**20}] * 2
    assert {(f["polars"], f["numba"]) for f in found} == {(1, 1)}
    assert {f["rayon"] for f in found if f["rayon"] is not None} <= {0}


def test_a_stage_s_tasks_declare_its_task_cpus_and_memory(cluster, tmp_path: Path) -> None:
    """A stage that declares ``task_cpus = 2`` and ``task_memory = "300MiB"``: Ray assigns its
    buckets two CPUs (the whole node) and that memory, and bounds their threads to two; the stage
    after it declares nothing and its buckets get the run's one CPU and one thread."""
    spec = worker_stages.sized_spec(tmp_path / "sized.toml", "", 'task_cpus = 2\ntask_memory = "300MiB"', "")
    out = tmp_path / "ray"
    run_on_ray(spec, out)

    def seen(key: str) -> list[tuple]:
        info = json.loads((out / ".stages" / key / "_SUCCESS.json").read_text())["stats"]["info"]
        return [(t["resources"], t["threads"], t["polars"]) for t in info["tasks"]]

    assert seen("sized_1") == [({"CPU": 2.0, "memory": 300.0 * 2**20}, "2", 2)] * 2
    assert seen("sized_2") == [({"CPU": 1.0}, "1", 1)] * 2


def test_a_whole_stage_runs_in_a_ray_task(cluster, tmp_path: Path) -> None:
    run_on_ray(worker_stages.where_spec(tmp_path / "where.toml"), tmp_path / "ray")
    info = json.loads((tmp_path / "ray" / ".stages" / "t_where" / "_SUCCESS.json").read_text())["stats"]["info"]
    host, _, rest = info["worker"].partition(":")
    pid, _, node = rest.partition("@")
    assert host == socket.gethostname() and int(pid) != os.getpid() and node == ray.get_runtime_context().get_node_id()


def test_a_task_whose_worker_dies_every_time_is_one_error(cluster, tmp_path: Path) -> None:
    """Bucket 1 of ``t_crash`` kills its worker on every try: after Ray's retries the run ends with
    :class:`WorkerCrash` (the CLI's one error line), and bucket 0's record is kept for the rerun."""
    from recgpt_data.engines import WorkerCrash

    out = tmp_path / "ray"
    with pytest.raises(WorkerCrash, match=r"^a Ray task's worker or node died \(WorkerCrashedError\)"):
        run_on_ray(worker_stages.crash_spec(tmp_path / "crash.toml"), out)
    assert [p.name for p in (out / ".stages" / "t_crash" / "_parts").iterdir()] == ["00000.json"]


def test_a_task_s_usage_error_reaches_the_driver_as_itself(cluster, tmp_path: Path) -> None:
    """A stage that refuses its input inside a Ray task ends the run with that error, one line, as
    the local engine gives it, not Ray's wrapper with the worker's traceback."""
    from recgpt_data.errors import UsageError

    with pytest.raises(UsageError) as refused:
        run_on_ray(worker_stages.crash_spec(tmp_path / "refuse.toml", "t_refuse"), tmp_path / "ray")
    assert type(refused.value) is UsageError and str(refused.value) == worker_stages.REFUSAL
