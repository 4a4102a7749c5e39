"""The Ray engine on a real two-node Ray cluster on this machine (two ``ray start`` nodes of one CPU
each, on 127.0.0.1): the demo corpus built on it has the bytes of the local build, with tasks on both
nodes, also with its output in S3 (moto's server on 127.0.0.1), where the prepare steps' tasks of
ingest, clean_items, dedup, p5_benchmark, instruct_pairs, write_pretrain and pretrain_tokens run on
both nodes too; tasks that need the driver's disk stay on its node while others spread; and a node
killed while one of its buckets runs costs that bucket alone, recomputed on the node that is left
(that test kills the second node, so it comes last).

Each node runs in its own process group (its own session), so the teardown and the node loss kill
exactly this module's Ray processes (and the workers under them), never another Ray on the machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import worker_stages
from conftest import REPO, folder_digests
from ray_nodes import Node, two_nodes
from s3_server import BUCKET, assert_same_build, client, moto_s3, objects
from test_corpus_workers import DEMO_SHARD_ROWS, corpus_spec
from test_workers import stage_tables

from recgpt_data.io.storage import STORE_SETTINGS
from recgpt_data.pipeline.runner import run_spec
from recgpt_data.pipeline.spec import load_spec
from recgpt_data.pipeline.store import PARTS, STAGES, WORK_ENV

pytest.importorskip("ray")

DEMO_DATA = REPO / "recgpt_data" / "demo"
TESTS = Path(__file__).resolve().parent
RUN_SECONDS = 300  # for one `recgpt-data run`
DRIVER = (
    "import sys, worker_stages; from recgpt_data.cli import main; sys.argv = ['recgpt-data', *sys.argv[1:]]; main()"
)


@dataclass
class Cluster:
    address: str
    env: dict[str, str]  # what a driver needs to join (the token)
    head: Node
    second: Node


def cluster_env() -> dict[str, str]:
    """The environment of nodes and drivers: workers import the test stages, and the cluster admits
    only holders of a token made for it. No object-store settings: a run's tasks have those its
    driver has."""
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    return {
        **{name: value for name, value in os.environ.items() if name not in STORE_SETTINGS},
        "PYTHONPATH": path,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
        "MPLBACKEND": "Agg",
    }


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Two one-CPU nodes: the head, whose buckets of ``t_hold`` keep its CPU until one is held on the
    second, and the second, whose buckets of ``t_hold`` wait to be killed."""
    root = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))  # short: Ray's socket paths live under it
    env = cluster_env()
    try:
        with two_nodes(root, env, {worker_stages.WAIT_HERE: "1"}, {worker_stages.HOLD_HERE: "1"}) as nodes:
            address, head, second = nodes
            yield Cluster(address, env, head, second)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def on_cluster(cluster: Cluster, *args: str) -> list[str]:
    """A ``recgpt-data run`` command line for ``cluster`` (in an interpreter that has the test stages)."""
    return [sys.executable, "-c", DRIVER, "run", *args, "--engine", "ray", "--address", cluster.address]


def run_on_cluster(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    """``recgpt-data run ARGS`` on ``cluster``, to its end."""
    return subprocess.run(
        on_cluster(cluster, *args), env=cluster.env, capture_output=True, text=True, timeout=RUN_SECONDS
    )


def part_records(out: Path) -> dict[str, bytes]:
    """The bucket records of the build in the local folder ``out``, by path relative to it."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.glob(".stages/*/_parts/*.json"))}


def nodes_of(files: Mapping[str, bytes]) -> dict[str, list[str]]:
    """The Ray node that ran each finished bucket, by stage, from a build's files (by relative path)."""
    found: dict[str, list[str]] = {}
    for path, data in sorted(files.items()):
        parts = path.split("/")
        if len(parts) == 4 and (parts[0], parts[2]) == (STAGES, PARTS):
            found.setdefault(parts[1], []).append(json.loads(data)["worker"].split("@")[1])
    return found


def test_demo_built_on_two_nodes_equals_the_local_build(cluster: Cluster, demo_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_on_cluster(cluster, str(REPO / "pipelines" / "demo.toml"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert folder_digests(out) == folder_digests(demo_corpus)
    assert stage_tables(out) == stage_tables(demo_corpus)
    nodes = nodes_of(part_records(out))
    assert {"split", "pretrain_documents"} <= set(nodes) and all(len(n) == 2 for n in nodes.values())
    assert len({node for ran in nodes.values() for node in ran}) == 2  # both nodes ran buckets


# the stages whose prepare step's tasks run anywhere with the output in object storage
ANYWHERE = ("ingest", "dedup", "write_pretrain", "pretrain_tokens", "p5_benchmark", "instruct_pairs")


def built_in_s3(
    cluster: Cluster, spec: Path, work: Path, *args: str, raw: Mapping[str, Path] | None = None
) -> tuple[dict[str, bytes], int]:
    """``spec`` run on ``cluster`` into a fresh S3 (moto on 127.0.0.1), the S3 settings in the
    driver's environment alone (the nodes have none, so the tasks reach the store with what the
    engine passes them), its work folder ``work``, after ``raw`` (key under the bucket -> local
    file) is put there: every object of the build, by key under its output prefix, and the
    driver's pid."""
    with moto_s3() as settings:
        fs = client(settings)
        fs.mkdir(BUCKET)
        for key, path in (raw or {}).items():
            fs.put_file(str(path), f"{BUCKET}/{key}")
        out = f"s3://{BUCKET}/runs/{spec.stem}"
        env = {**cluster.env, **settings, WORK_ENV: str(work)}
        command = on_cluster(cluster, str(spec), "--out", out, *args)
        driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _, stderr = driver.communicate(timeout=RUN_SECONDS)
        assert driver.returncode == 0, stderr
        return objects(out, fs), driver.pid


def prepare_nodes(stage: Mapping[str, Any]) -> set[str]:
    """The nodes that ran a stage's prepare step's tasks, from its record in ``stats.json``."""
    return {worker.split("@")[1] for worker in stage["prepare_workers"]}


def test_demo_built_on_two_nodes_into_object_storage_equals_the_local_build(
    cluster: Cluster, demo_corpus: Path, tmp_path: Path
) -> None:
    """The demo with its output and its raw inputs in S3 (:func:`built_in_s3`): every object is the
    local build's (raw inputs at local paths) bytes; the buckets of the partitioned stages (dedup's
    too, which read its prepare step's tables uploaded to the store) and the prepare steps' tasks of
    the stages that exchange their files through the store (:data:`ANYWHERE`, ingest's reading its
    raw objects itself, dedup's rounds) ran on both nodes, the whole stages, which use the driver's
    work folder, on the head: the driver joined the head's node. The
    demo runs with its token arrays too, compared with the local build run on with them (its stages
    but ``pretrain_tokens``, report and card come from cache)."""
    spec = corpus_spec("demo", tmp_path / "demo-tokens.toml", DEMO_SHARD_ROWS, None)
    local = tmp_path / "local"
    shutil.copytree(demo_corpus, local)
    run_spec(load_spec(spec), local)
    on_s3 = tmp_path / "demo-tokens-raw-on-s3.toml"
    on_s3.write_text(spec.read_text(encoding="utf-8").replace('"demo:', f'"s3://{BUCKET}/raw/'), encoding="utf-8")
    raw = {
        f"raw/{path.relative_to(DEMO_DATA).as_posix()}": path
        for path in sorted(DEMO_DATA.rglob("*"))
        if path.is_file() and path.suffix != ".md"
    }
    remote, pid = built_in_s3(cluster, on_s3, tmp_path / "work", raw=raw)
    assert_same_build(remote, local)
    nodes = nodes_of(remote)
    head, second = cluster.head.node_id(), cluster.second.node_id()
    assert cluster.head.ran_driver(pid)
    stages = json.loads(remote["stats.json"])["stages"]
    whole = {key: stage["worker"] for key, stage in stages.items() if key not in nodes}
    assert {"ingest", "p5_benchmark", "write_pretrain", "report", "card"} <= set(whole)
    assert {worker.split("@")[1] for worker in whole.values()} == {head}
    for key in ANYWHERE:
        assert prepare_nodes(stages[key]) == {head, second}, key
    assert "dedup" in nodes and all(len(ran) == 2 for ran in nodes.values())
    assert {node for ran in nodes.values() for node in ran} == {head, second}


def test_samples_built_on_two_nodes_into_object_storage_equals_the_local_build(
    cluster: Cluster, samples_corpus: Path, shared: Path, tmp_path: Path
) -> None:
    """Every real sample through the whole RecGPT build (``pipelines/samples.toml``) on the two
    nodes, its output in S3 (:func:`built_in_s3`): every object is the local build's bytes; every
    stage ran in Ray tasks, none in the driver process; the partitioned stages' buckets ran on both
    nodes, and so did the prepare steps' tasks of :data:`ANYWHERE` (dedup's rounds too) and of
    ``clean_items`` (whose 77,038 items are two chunks here), while the whole stages ran on the
    driver's node."""
    spec = REPO / "pipelines" / "samples.toml"
    remote, pid = built_in_s3(cluster, spec, tmp_path / "work", "--var", f"shared={shared}")
    assert_same_build(remote, samples_corpus)
    nodes = nodes_of(remote)
    head, second = cluster.head.node_id(), cluster.second.node_id()
    stages = json.loads(remote["stats.json"])["stages"]
    whole = {key: stage["worker"] for key, stage in stages.items() if key not in nodes}
    assert set(whole) | set(nodes) == set(stages) and {"dedup", "pretrain_documents"} <= set(nodes)
    assert all(int(worker.split(":")[1].split("@")[0]) != pid for worker in whole.values())
    driver_node = {worker.split("@")[1] for worker in whole.values()}  # where the work folder is
    assert len(driver_node) == 1 and driver_node <= {head, second}
    assert {node for ran in nodes.values() for node in ran} == {head, second}
    for key in ("clean_items", *(key for key in ANYWHERE if key in stages)):
        assert prepare_nodes(stages[key]) == {head, second}, key


PLACES = """
import json, sys, ray, worker_stages
from recgpt_data.engines.ray import RayEngine
engine = RayEngine(sys.argv[1])
node = lambda name: name.split("@")[1]
print(json.dumps({
    "driver": ray.get_runtime_context().get_node_id(),
    "here": [node(n) for n in engine.map(worker_stages.where_task, [0.5] * 6, here=True)],
    "anywhere": [node(n) for n in engine.map(worker_stages.where_task, [0.5] * 6)],
}))
"""


def test_tasks_that_need_the_drivers_disk_stay_on_its_node(cluster: Cluster) -> None:
    """With the output in object storage a run's work folder is on the driver's disk: the tasks that
    use it run on the driver's node, while the same tasks without that spread over both (each keeps
    its node's one CPU half a second, so one node cannot take them all at once)."""
    done = subprocess.run(
        [sys.executable, "-c", PLACES, cluster.address],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(found["here"]) == {found["driver"]}
    assert len(set(found["anywhere"])) == 2


def test_a_lost_node_costs_only_its_bucket(cluster: Cluster, tmp_path: Path) -> None:
    """The second node is killed while its bucket of ``t_hold`` runs: the run finishes on the head
    (Ray retries the lost task) or fails in one line; either way a rerun completes with the local
    build's bytes, and the bucket that finished on the head ran exactly once."""
    sync = tmp_path / "sync"
    spec = worker_stages.hold_spec(tmp_path / "hold.toml", sync)
    local = tmp_path / "local"
    run_spec(load_spec(spec), local)
    shutil.rmtree(sync)
    out = tmp_path / "out"
    with open(tmp_path / "stderr.txt", "w+") as stderr:
        run = subprocess.Popen(
            on_cluster(cluster, str(spec), "--out", str(out)),
            env=cluster.env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )

        def started() -> bool:
            return any(sync.glob("ran-*-held-*")) or run.poll() is not None

        try:
            worker_stages.wait_until(started, 120, "a bucket on the second node")
            assert run.poll() is None, (tmp_path / "stderr.txt").read_text()
            cluster.second.kill()
            run.wait(timeout=RUN_SECONDS)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
    failed = (tmp_path / "stderr.txt").read_text()
    if run.returncode != 0:
        errors = [line for line in failed.splitlines() if line.startswith("error:")]
        assert run.returncode == 1 and len(errors) == 1, failed
    rerun = run_on_cluster(cluster, str(spec), "--out", str(out))
    assert rerun.returncode == 0, rerun.stderr
    ran = sorted(p.name.rsplit("-", 1)[0] for p in sync.iterdir())
    held = [name for name in ran if name.endswith("-held")]
    assert len(held) == 1, ran
    lost = held[0].split("-")[1]
    kept = "1" if lost == "0" else "0"
    assert ran == sorted([f"ran-{lost}-held", f"ran-{lost}-free", f"ran-{kept}-free"])
    hold_nodes = nodes_of(part_records(out))["t_hold"]
    assert len(set(hold_nodes)) == 1 and len(hold_nodes) == 2  # both on the head
    assert folder_digests(out) == folder_digests(local)
    assert stage_tables(out) == stage_tables(local)
