"""Object storage: runs whose output folder (and raw inputs) are ``s3://`` URLs, against a real S3
API server (moto's standalone server on 127.0.0.1, dummy credentials, its endpoint through
``AWS_ENDPOINT_URL``). Every final-folder object and every stage table object must be the same
bytes as the local build of the same spec (the ``demo_corpus`` fixture); a run killed with SIGKILL
mid-stage leaves nothing that looks complete and resumes to the same bytes; the buckets of a stage
with a prepare step read only the store; the lock refuses a second writer; names never lead
outside the prefix."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from conftest import CLI, REPO
from raw_tree import gzip_file
from s3_server import BUCKET, Served, assert_same_build, assert_same_stage, client, moto_s3, objects
from test_corpus_workers import DEMO_SHARD_ROWS, PIECE_TOKENS, corpus_spec
from test_ingest_blocks import BAD_LINES, beauty_with_bad_lines
from test_ingest_ranges import line_starts, plain_lines, variants

from recgpt_data.clean.item_tasks import ChunkJob
from recgpt_data.dedup.lsh import NearDuplicateConfig, cluster_texts
from recgpt_data.dedup.normalize import normalize
from recgpt_data.dedup.prepare import Job as DedupJob
from recgpt_data.dedup.spread import Job as SpreadJob
from recgpt_data.dedup.spread import cluster_spread, verify, write_docs
from recgpt_data.engines import get_engine
from recgpt_data.errors import UsageError
from recgpt_data.ingest_tasks import Block, FileTask, Shift, ZstdCopy, open_file, read_block, shifted
from recgpt_data.io import storage
from recgpt_data.io.lock import folder_lock
from recgpt_data.io.storage import join
from recgpt_data.io.streams import BOM, LineBlocks
from recgpt_data.pipeline.gc import collect
from recgpt_data.pipeline.partition import PartitionTask, part_name
from recgpt_data.pipeline.runner import run_spec
from recgpt_data.pipeline.spec import load_spec
from recgpt_data.pipeline.store import MARKER, Store, write_tables
from recgpt_data.sources import get_source
from recgpt_data.sources.sniff import SNIFF_BYTES
from recgpt_data.stage import StageOutput, StageStats

DEMO_SPEC = REPO / "pipelines" / "demo.toml"
DEMO_DATA = REPO / "recgpt_data" / "demo"
SERVED = Served()  # the bytes the module's server sends


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A bucket on a fresh moto server; the AWS settings point at it (for this process and the CLI
    processes it starts) while the module's tests run."""
    with moto_s3(SERVED) as settings, pytest.MonkeyPatch.context() as patch:
        for name, value in {**settings, "RECGPT_WORK_DIR": str(tmp_path_factory.mktemp("work"))}.items():
            patch.setenv(name, value)
        client().mkdir(BUCKET)
        yield f"s3://{BUCKET}"


def cli(*args: str, kill_at: str | None = None, work: Path | None = None) -> subprocess.CompletedProcess:
    """``recgpt-data ARGS`` in a fresh process, with the module's S3 settings (and ``work`` as
    its local work folder, as a run on another machine would have)."""
    env = {**os.environ, "MPLBACKEND": "Agg"}
    if work is not None:
        env["RECGPT_WORK_DIR"] = str(work)
    env.pop("RECGPT_KILL_AT", None)
    if kill_at:
        env["RECGPT_KILL_AT"] = kill_at
    return subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def raw_spec(s3: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo spec with its raw inputs read from ``s3://.../raw/`` (the bundled files uploaded)."""
    fs = client()
    for path in sorted(p for p in DEMO_DATA.rglob("*") if p.is_file() and p.suffix != ".md"):
        fs.put_file(str(path), f"{BUCKET}/raw/{path.relative_to(DEMO_DATA).as_posix()}")
    text = DEMO_SPEC.read_text(encoding="utf-8")
    assert text.count('"demo:') == 3
    spec = tmp_path_factory.mktemp("spec") / "demo.toml"
    spec.write_text(text.replace('"demo:', f'"{s3}/raw/'), encoding="utf-8")
    return spec


@pytest.fixture(scope="module")
def demo_on_s3(s3: str) -> str:
    """The demo built into ``s3://.../runs/demo`` (its prefix, which tests only read)."""
    out = f"{s3}/runs/demo"
    done = cli("run", str(DEMO_SPEC), "--out", out)
    assert done.returncode == 0, done.stderr
    return out


def test_demo_built_on_s3_is_the_local_build(demo_on_s3: str, demo_corpus: Path) -> None:
    out = demo_on_s3
    assert_same_build(objects(out), demo_corpus)
    shown = cli("status", str(DEMO_SPEC), "--out", out)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("│ done ") == 15  # every stage current: a rerun would skip them all


def test_killed_stage_on_s3_looks_unfinished_and_resumes_from_raw_on_s3(
    s3: str, raw_spec: Path, demo_corpus: Path, tmp_path: Path
) -> None:
    """Raw inputs on S3 too; ``hold_out`` (two user buckets) is killed after its first bucket, and
    the run resumed with an empty work folder, as on another machine (``report`` and ``card`` read
    the benchmarks' files that ``p5_benchmark`` published before the kill)."""
    out = f"{s3}/runs/resumed"
    killed = cli("run", str(raw_spec), "--out", out, kill_at="stage:hold_out:mid")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = objects(out)
    assert f".stages/hold_out/{MARKER}" not in left
    assert list(json.loads(left["stats.json"])["stages"]) == [
        "ingest",
        "clean_items",
        "clean",
        "langid",
        "dedup",
        "p5_benchmark",
    ]
    assert "README.md" not in left and "data/pretrain" not in {k.rsplit("/", 1)[0] for k in left}
    assert ".stages/lock" in left  # the killed run's lock, which the rerun on this host takes over
    record = json.loads(left[".stages/hold_out/_parts/00000.json"])
    assert ".stages/hold_out/_parts/00001.json" not in left
    resumed = cli("run", str(raw_spec), "--out", out, work=tmp_path / "elsewhere")
    assert resumed.returncode == 0, resumed.stderr
    assert len(list((tmp_path / "elsewhere").glob("*/final/eval/*/summary.json"))) == 2  # fetched, not rebuilt
    assert json.loads(objects(out)[".stages/hold_out/_parts/00000.json"])["tables"] == record["tables"]
    assert ".stages/lock" not in objects(out)
    assert_same_build(objects(out), demo_corpus)
    stats = json.loads(objects(out)["stats.json"])
    local = json.loads((demo_corpus / "stats.json").read_text())
    named = [[f["file"] for s in d["stages"]["ingest"]["info"]["sources"] for f in s["files"]] for d in (stats, local)]
    assert named[0] == [name.replace("demo:", f"{s3}/raw/") for name in named[1]]  # as the spec declares them


def test_files_a_killed_stages_tasks_staged_in_the_store_are_never_published(
    s3: str, demo_on_s3: str, demo_corpus: Path, tmp_path: Path
) -> None:
    """The demo on S3 run on with its token arrays: ``pretrain_tokens``' tasks stage their files
    under the stage's prefix in the store; killed once they are done, none of them is in the final
    folder or named by a record, gc deletes them, and the rerun publishes the local build's bytes."""
    out = f"{s3}/runs/tokens"
    client().copy(demo_on_s3.removeprefix("s3://"), out.removeprefix("s3://"), recursive=True)
    spec = corpus_spec("demo", tmp_path / "tokens.toml", DEMO_SHARD_ROWS, None, 10 * PIECE_TOKENS)  # shards in pieces
    killed = cli("run", str(spec), "--out", out, "--until", "pretrain_tokens", kill_at="stage:pretrain_tokens:prepared")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = objects(out)
    staged = [k for k in left if k.startswith(".stages/pretrain_tokens/out/")]
    assert staged and all(k.endswith((".bin", ".idx")) for k in staged)
    assert f".stages/pretrain_tokens/{MARKER}" not in left and not [k for k in left if k.startswith("exports/tokens")]
    swept = cli("gc", out, "--spec", str(spec))
    assert swept.returncode == 0, swept.stderr
    assert [k for k in objects(out) if k.startswith(".stages/pretrain_tokens/")] == []
    rerun = cli("run", str(spec), "--out", out, "--until", "pretrain_tokens")
    assert rerun.returncode == 0, rerun.stderr
    local = tmp_path / "local"
    shutil.copytree(demo_corpus, local)
    run_spec(load_spec(spec), local, until="pretrain_tokens")
    tokens = {k: v for k, v in objects(out).items() if k.startswith("exports/tokens/")}
    expected = {p.relative_to(local).as_posix(): p.read_bytes() for p in (local / "exports" / "tokens").iterdir()}
    assert len(expected) > 2 and tokens == expected
    assert_same_stage(objects(out), local, "pretrain_tokens")


def test_a_killed_benchmark_stage_publishes_nothing_its_tasks_staged(s3: str, demo_on_s3: str, tmp_path: Path) -> None:
    """The demo on S3 run on with one benchmark renamed, so that ``p5_benchmark`` runs again: its
    tasks stage the benchmarks' files under the stage's prefix in the store; killed once they are
    done, the final folder holds no benchmark (the previous attempt's files were removed first),
    no record names what they staged, and gc deletes all of it."""
    out = f"{s3}/runs/benchmarks"
    client().copy(demo_on_s3.removeprefix("s3://"), out.removeprefix("s3://"), recursive=True)
    spec = tmp_path / "renamed.toml"
    text = DEMO_SPEC.read_text(encoding="utf-8")
    assert text.count('name = "music"') == 1
    spec.write_text(text.replace('name = "music"', 'name = "tunes"'), encoding="utf-8")
    killed = cli("run", str(spec), "--out", out, "--until", "p5_benchmark", kill_at="stage:p5_benchmark:prepared")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = objects(out)
    staged = {k.split("/", 4)[4] for k in left if k.startswith(".stages/p5_benchmark/out/")}
    assert {"eval/tunes/summary.json", "eval/movies/summary.json"} <= staged
    assert [k for k in left if k.startswith(".stages/p5_benchmark/_prepared/") and k.endswith("record.parquet")]
    assert f".stages/p5_benchmark/{MARKER}" not in left and not [k for k in left if k.startswith("eval/")]
    collect(load_spec(spec), out)
    assert [k for k in objects(out) if k.startswith(".stages/p5_benchmark/")] == []


class Recording:
    """The local engine in this process, keeping every task it is given and where it may run."""

    name = "local"
    in_process = True

    def __init__(self) -> None:
        self.engine = get_engine("local")
        self.given: list[tuple[object, bool]] = []

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any], *, here: bool = False) -> Iterator[Any]:
        self.given.extend((task, here) for task in tasks)
        return self.engine.map(fn, tasks, here=here)

    def sized(self, cpus: float | None, memory: int | None) -> Recording:
        """The specs this engine runs declare no resources of their own: itself, recording on."""
        return self

    def close(self) -> None:
        self.engine.close()


def test_buckets_of_a_prepared_stage_read_only_the_store(s3: str, demo_corpus: Path) -> None:
    """dedup's prepare step's rounds pass their files through the store (under the stage's prefix),
    so they, and its buckets, which read nothing but the store's objects, may run on any node. The
    step's objects are gone once the stage is done, and its tables are the local build's.
    clean_items' chunks, on the way, may run anywhere and write into the store too."""
    out = f"{s3}/runs/prepared"
    engine = Recording()
    run_spec(load_spec(DEMO_SPEC), out, until="dedup", engine=engine)
    chunks = [(task, here) for task, here in engine.given if isinstance(task, ChunkJob)]
    assert chunks and all(not here and task.scratch.startswith(f"{out}/.stages/clean_items/") for task, here in chunks)
    rounds = [(task, here) for task, here in engine.given if isinstance(task, (DedupJob, SpreadJob))]
    assert {type(task) for task, _ in rounds} == {DedupJob, SpreadJob}
    assert all(not here and str(task.folder).startswith(f"{out}/.stages/dedup/") for task, here in rounds)
    buckets = [
        (task, here)
        for task, here in engine.given
        if isinstance(task, PartitionTask) and task.definition.name == "dedup"
    ]
    assert [task.index for task, _ in buckets] == [0, 1]
    for task, here in buckets:
        assert not here
        assert {"interactions", "items", "dedup_marks"} <= set(task.inputs)
        assert all(f.startswith(f"{out}/.stages/") for files in task.inputs.values() for f in files)
    left = objects(out)
    assert not [key for key in left if "/_prepared/" in key]
    assert_same_stage(left, demo_corpus, "dedup")


def spread_docs(shared: Path, buckets: int) -> list[pl.DataFrame]:
    """Real review texts (Musical Instruments' 5-core, normalised) as documents of ``buckets``
    buckets, review ``k`` in bucket ``k % buckets``, and in the last bucket, near copies (one word
    replaced) of every tenth long review: candidate edges across buckets and partitions."""
    path = shared / "amazon2014" / "reviews_Musical_Instruments_5.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        texts = [json.loads(line)["reviewText"] for line in handle]
    long_ = [t for t in texts if len(t.split()) >= 60][::10]
    copies = [" ".join(["zebra", *t.split()[1:]]) for t in long_]
    norm = normalize(pl.Series([*texts, *copies], dtype=pl.String))
    everything = pl.DataFrame({"dataset": "music", "text": norm}).with_row_index("first").filter(pl.col("text") != "")
    owner = pl.when(pl.col("first") >= len(texts)).then(buckets - 1).otherwise(pl.col("first") % buckets)
    everything = everything.with_columns(owner.alias("_bucket"), pl.lit(1).alias("count"), pl.lit(0).alias("best"))
    return [everything.filter(pl.col("_bucket") == b).with_row_index("member").drop("_bucket") for b in range(buckets)]


def test_each_verify_task_reads_only_its_partitions_objects(s3: str, shared: Path) -> None:
    """Texts clustered across buckets through the store: the candidate and verified edges are the
    single-process clustering's, and each verify task GETs nothing but its own edge partition's
    objects and the signatures sent to it, which are exactly those of its edges' nodes."""
    buckets, partitions, config = 3, 4, NearDuplicateConfig()
    folder = f"{s3}/spread"
    docs = spread_docs(shared, buckets)
    for b, frame in enumerate(docs):
        write_docs(frame, folder, b, partitions)
    found = cluster_spread(folder, buckets, partitions, config, map)
    whole = pl.concat(docs).sort("first")
    expected = cluster_texts(whole["text"], config)
    assert (found.candidate_edges, found.verified_edges) == (expected.candidate_edges, expected.verified_edges)
    assert expected.verified_edges > 100
    prefix = f"/{BUCKET}/spread/"
    for r in range(partitions):
        own = [f"edges/{q:05d}-{r:05d}.arrow" for q in range(partitions)]
        sent = [f"sent/{p:05d}-{r:05d}.arrow" for p in range(partitions)]
        SERVED.clear()
        verify(SpreadJob(folder, r, buckets, partitions, config))
        read = {key.removeprefix(prefix) for key, n in SERVED.bytes.items() if n}
        assert read == set(own) | set(sent), r
        edges = pl.concat([pl.read_ipc(f"{folder}/{name}") for name in own])
        assert edges.height > 0
        nodes = pl.concat([edges["u"], edges["v"]]).unique().sort()
        ids = pl.concat([pl.read_ipc(f"{folder}/{name}")["id"] for name in sent]).sort()
        assert ids.to_list() == nodes.to_list()


def test_gc_deletes_what_a_dead_attempt_left(s3: str) -> None:
    out = f"{s3}/runs/dead"
    killed = cli("run", str(DEMO_SPEC), "--out", out, "--until", "ingest", kill_at="stage:ingest:mid")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = [k for k in objects(out) if k.startswith(".stages/ingest/")]
    first = ".stages/ingest/interactions/"  # its first table's files (adopted from its tasks), named by no record
    pieces = ".stages/ingest/_prepared/"  # what its tasks wrote for the stage to adopt, under the attempt's prefix
    assert left and all(k.startswith((first, pieces)) and k.endswith(".parquet") for k in left)
    assert any(k.startswith(first) for k in left) and any(k.startswith(pieces) for k in left)
    swept = cli("gc", out, "--spec", str(DEMO_SPEC))
    assert swept.returncode == 0, swept.stderr
    assert [k for k in objects(out) if k.startswith(".stages/")] == []


def test_lock_refuses_a_second_writer(s3: str) -> None:
    out = f"{s3}/runs/locked"
    with folder_lock(out):
        with pytest.raises(UsageError, match="another run"), folder_lock(out):
            pass
        refused = cli("run", str(DEMO_SPEC), "--out", out)
        assert refused.returncode != 0
        assert "another run" in refused.stderr
    assert objects(out) == {}


def test_a_live_writer_elsewhere_keeps_its_lock(s3: str) -> None:
    out = f"{s3}/runs/elsewhere"
    lock = {".stages/lock": json.dumps({"holder": "build-host-7:4242"}).encode()}
    client().pipe_file(f"{BUCKET}/runs/elsewhere/.stages/lock", lock[".stages/lock"])
    with pytest.raises(UsageError, match="build-host-7:4242"), folder_lock(out):
        pass
    assert objects(out) == lock


@pytest.mark.parametrize("name", ["..", "../escaped", "a/../../escaped", "a//b", "./a"])
def test_names_cannot_leave_the_prefix(s3: str, name: str) -> None:
    store = Store(f"{s3}/runs/escape")
    with pytest.raises(UsageError, match="not a plain path"):
        store.stage_dir(name)
    frame = pl.DataFrame({"user_id": ["u1"]})
    with pytest.raises(UsageError, match="not a plain path"):
        write_tables(StageOutput({name: frame}, StageStats()), store.stage_dir("ok"), lambda t: part_name(t, 0))
    with pytest.raises(UsageError, match="not a plain path"):
        join(store.out, name)
    assert [k for k in client().find(BUCKET) if "escaped" in k or k.startswith(f"{BUCKET}/runs/escape")] == []


RAW_SOURCES = (  # format, the path declared under the raw folder (a folder or a file)
    ("amazon2018", "amazon2018"),  # a plain file cut into byte ranges, a gzip cut into copies, a README skipped
    ("movielens", "movielens/ml-100k"),  # files read whole, the dataset named by their folder
    ("amazon2014", "amazon2014/reviews_Digital_Music_5.json.gz"),  # a truncated gzip: its warning names the file
)


def raw_ingest_spec(root: str, folder: Path) -> Path:
    """An ingest of :data:`RAW_SOURCES` under ``root`` (a local folder or a URL), in blocks of 256 KiB."""
    sources = ", ".join(f'{{ format = "{f}", paths = ["{root}/{path}"] }}' for f, path in RAW_SOURCES)
    spec = folder / f"{'s3' if '://' in root else 'local'}.toml"
    spec.write_text(
        f'name = "raw"\n\n[[stages]]\nstage = "ingest"\nparams.block_bytes = {256 << 10}\n'
        f"params.sources = [{sources}]\n",
        encoding="utf-8",
    )
    return spec


def test_ingest_of_raw_objects_reads_them_in_tasks_anywhere_to_the_bytes_of_local_files(
    s3: str, shared: Path, tmp_path: Path
) -> None:
    """Raw inputs as objects: the driver lists them and reads no more than their starts; each
    reading task, none kept on the driver's node, streams its own object (a gzip into its decoder,
    a plain file's blocks in ranged reads), nothing copied, and the stage's tables are the bytes of
    the ingest of the same files on local disk (the rejects name each file where it is, with its
    line numbers), its accounting the same."""
    raw = tmp_path / "raw"
    beauty = beauty_with_bad_lines(shared, raw / "amazon2018", compressed=False)
    shutil.copy(shared / "amazon2018" / "meta_Magazine_Subscriptions.json.gz", beauty.parent)
    (beauty.parent / "README.md").write_text("notes\n", encoding="utf-8")
    shutil.copytree(shared / "movielens" / "ml-100k", raw / "movielens" / "ml-100k")
    (raw / "amazon2014").mkdir()
    shutil.copy(shared / "amazon2014" / "reviews_Digital_Music_5.json.gz", raw / "amazon2014")
    url = f"{s3}/ingest-raw"
    for path in sorted(p for p in raw.rglob("*") if p.is_file()):
        client().put_file(str(path), f"{url.removeprefix('s3://')}/{path.relative_to(raw).as_posix()}")
    local = tmp_path / "local"
    expected = run_spec(load_spec(raw_ingest_spec(str(raw), tmp_path)), local).stats["ingest"]
    out = f"{s3}/runs/raw-ingest"
    engine = Recording()
    SERVED.clear()
    try:
        got = run_spec(load_spec(raw_ingest_spec(url, tmp_path)), out, engine=engine).stats["ingest"]
    finally:
        engine.close()
    # what crossed the network: each object once (the driver reads the start of each Amazon file to
    # check its format, and fingerprints every object by its HEAD alone), a plain file cut into
    # blocks about once (each block its byte range, the byte before it and the rest of its last
    # line, in ranged reads: 1.015x its 2.46 MB in ten blocks, where numbering its lines first made 2x)
    sizes = {p.relative_to(raw).as_posix(): p.stat().st_size for p in raw.rglob("*") if p.is_file()}
    prefix = f"/{url.removeprefix('s3://')}/"
    sent = {key.removeprefix(prefix): n for key, n in SERVED.bytes.items() if key.startswith(prefix)}
    beauty = sizes["amazon2018/All_Beauty_5.json"]
    assert beauty + SNIFF_BYTES <= sent.pop("amazon2018/All_Beauty_5.json") <= 1.02 * beauty + SNIFF_BYTES
    assert sent == {
        "amazon2018/meta_Magazine_Subscriptions.json.gz": sizes["amazon2018/meta_Magazine_Subscriptions.json.gz"]
        + SNIFF_BYTES,
        "amazon2014/reviews_Digital_Music_5.json.gz": sizes["amazon2014/reviews_Digital_Music_5.json.gz"] + SNIFF_BYTES,
        "movielens/ml-100k/u.data": sizes["movielens/ml-100k/u.data"],
        "movielens/ml-100k/u.item": sizes["movielens/ml-100k/u.item"],
    }

    files = [task for task, _ in engine.given if isinstance(task, FileTask)]
    blocks = [task for task, _ in engine.given if isinstance(task, Block)]
    named = [f["file"] for s in expected["info"]["sources"] for f in s["files"]]
    assert [t.path for t in files] == [name.replace(str(raw), url) for name in named]
    shifts = [task for task, _ in engine.given if isinstance(task, Shift)]
    assert all(not here for task, here in engine.given if isinstance(task, (FileTask, Block, Shift)))
    assert {b.file.path.rsplit("/", 1)[-1] for b in blocks if b.span} == {"All_Beauty_5.json"}
    assert len(shifts) == sum(1 for b in blocks if b.span) - 1  # the first range's lines are the file's
    assert {b.file.path.rsplit("/", 1)[-1] for b in blocks if not b.span} == {
        "meta_Magazine_Subscriptions.json.gz",
        "reviews_Digital_Music_5.json.gz",
    }
    assert sum(1 for b in blocks if b.span) > 5
    assert not list(Path(os.environ["RECGPT_WORK_DIR"]).rglob("All_Beauty_5.json*"))  # nothing downloaded there

    def named_here(text: str) -> str:
        return text.replace(str(raw), url)

    assert json.loads(named_here(json.dumps(expected["info"]))) == got["info"]
    assert (expected["dropped"], expected["rows_out"]) == (got["dropped"], got["rows_out"])
    assert [len(s["skipped"]) for s in got["info"]["sources"]] == [
        1,
        5,
        0,
    ]  # the README; ml-100k's README, u.genre, u.info, u.occupation, u.user
    remote = objects(out)
    mine = json.loads((local / ".stages" / "ingest" / MARKER).read_text())["tables"]
    theirs = json.loads(remote[f".stages/ingest/{MARKER}"])["tables"]
    assert theirs.keys() == mine.keys() == {"interactions", "items", "dropped_raw"}
    for name, table in mine.items():
        pairs = zip(theirs[name]["files"], table["files"], strict=True)
        read = [
            (remote[f".stages/ingest/{a['path']}"], (local / ".stages" / "ingest" / b["path"]).read_bytes())
            for a, b in pairs
        ]
        if name != "dropped_raw":
            assert all(a == b for a, b in read)
            continue
        rejects = [pl.read_parquet(io.BytesIO(data)) for pair in read for data in pair]
        theirs_rejects, mine_rejects = pl.concat(rejects[::2]), pl.concat(rejects[1::2])
        assert theirs_rejects.equals(mine_rejects.with_columns(pl.col("file").str.replace(str(raw), url, literal=True)))
        assert theirs_rejects.filter(pl.col("file").str.ends_with("All_Beauty_5.json"))["line"].to_list() == sorted(
            BAD_LINES
        )


@pytest.fixture(scope="module")
def magazines(s3: str, shared: Path) -> str:
    """Amazon 2018 Magazine Subscriptions (its plain reviews and its gzip metadata) uploaded under
    ``s3://.../cli-raw/amazon2018``."""
    url = f"{s3}/cli-raw/amazon2018"
    for name in ("Magazine_Subscriptions_5.json", "meta_Magazine_Subscriptions.json.gz"):
        client().put_file(str(shared / "amazon2018" / name), f"{url.removeprefix('s3://')}/{name}")
    return url


def test_cli_ingest_of_raw_objects_writes_what_the_ingest_of_local_files_writes(
    magazines: str, shared: Path, tmp_path: Path
) -> None:
    """``recgpt-data ingest`` streams s3:// objects: the same tables, rejects (line numbers
    included) and accounting as the same files on local disk, each file named where it is."""
    local = tmp_path / "raw"
    local.mkdir()
    for name in ("Magazine_Subscriptions_5.json", "meta_Magazine_Subscriptions.json.gz"):
        shutil.copy(shared / "amazon2018" / name, local)
    assert len(same_ingest("amazon2018", local, magazines, tmp_path)) == 2


def same_ingest(source: str, local: Path, url: str, tmp_path: Path) -> list[Path]:
    """``recgpt-data ingest SOURCE`` of the folder ``local`` and of its copy at ``url`` wrote the same
    tables, byte for byte, and the same rejects and accounting, each file named where it is; the
    tables (paths under ``tmp_path/local``, where the local ingest wrote)."""
    for raw, out in ((str(local), tmp_path / "local"), (url, tmp_path / "remote")):
        done = cli("ingest", source, raw, "--out", str(out))
        assert done.returncode == 0, done.stderr
    mine, theirs = tmp_path / "local", tmp_path / "remote"
    tables = sorted(p.relative_to(mine) for p in mine.rglob("*.parquet"))
    assert tables == sorted(p.relative_to(theirs) for p in theirs.rglob("*.parquet"))
    assert all((mine / t).read_bytes() == (theirs / t).read_bytes() for t in tables)
    for name in ("rejects.jsonl", "summary.json"):
        assert (theirs / name).read_text() == (mine / name).read_text().replace(str(local), url)
    return [mine / t for t in tables]


def test_goodreads_books_from_objects_join_the_side_files_beside_them(
    s3: str, shared: Path, fixtures: Path, tmp_path: Path
) -> None:
    """Goodreads read from s3://: the books file is joined with the author names and genres of the
    gzipped side files in its prefix, as on local disk, beside the real goodbooks-10k books and the
    goodbooks interaction files in their own folder: the same bytes as the local ingest."""
    local = tmp_path / "raw" / "goodreads"
    for name in ("goodreads_books_poetry.json", "goodreads_book_authors.json", "goodreads_book_genres_initial.json"):
        gzip_file(fixtures / "goodreads" / name, local)
    (local / "goodbooks-10k").mkdir()
    shutil.copy(shared / "goodreads_goodbooks10k" / "books.csv", local / "goodbooks-10k")
    for name in ("ratings.csv", "to_read.csv"):
        shutil.copy(fixtures / "goodreads" / "goodbooks-10k" / name, local / "goodbooks-10k")
    url = f"{s3}/goodreads-raw"
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        client().put_file(str(path), f"{url.removeprefix('s3://')}/{path.relative_to(local).as_posix()}")
    tables = same_ingest("goodreads", local, url, tmp_path)
    books = pl.read_parquet(tmp_path / "local" / "items" / "goodreads" / "goodreads_books_poetry.json.gz.parquet")
    # the names only the authors file holds (writers before other roles), the genres only the genres file
    assert books["author"].to_list() == ["Ada Verse", "Chloé Traduit, Dan Drawer", "Eve Stone, Finn Leaf", None]
    assert books["categories"].to_list() == [["fiction", "poetry"], ["poetry"], None, []]
    assert len(tables) == 4


def ingest_spec(folder: Path, path: str) -> Path:
    """A spec of one ingest stage reading ``path`` as Amazon 2018 reviews."""
    spec = folder / "spec.toml"
    spec.write_text(
        f'name = "raw"\n\n[[stages]]\nstage = "ingest"\n'
        f'params.sources = [{{ format = "amazon2018", paths = ["{path}"] }}]\n',
        encoding="utf-8",
    )
    return spec


def test_check_reads_the_first_records_of_raw_objects(magazines: str, tmp_path: Path) -> None:
    """``recgpt-data check`` of a spec whose raw inputs are objects reads the start of each with
    its source's reader, as it does a local file's."""
    done = cli("check", str(ingest_spec(tmp_path, magazines)), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "Magazine_Subscriptions_5.json (interactions): first " in done.stderr
    assert "meta_Magazine_Subscriptions.json.gz (items): first " in done.stderr


@pytest.mark.parametrize(
    ("command", "path", "error"),
    [
        ("ingest", "s3://no-such-bucket/raw", "no such bucket: no-such-bucket"),
        ("ingest", f"s3://{BUCKET}/cli-raw/none", f"no such object or prefix: s3://{BUCKET}/cli-raw/none"),
        ("check", "s3://no-such-bucket/raw", "problem: stage ingest: no such bucket: no-such-bucket"),
    ],
)
def test_a_missing_bucket_or_object_is_one_line(s3: str, tmp_path: Path, command: str, path: str, error: str) -> None:
    if command == "ingest":
        done = cli("ingest", "amazon2018", path, "--out", str(tmp_path / "out"))
    else:
        done = cli("check", str(ingest_spec(tmp_path, path)), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert error in done.stderr
    assert "Traceback" not in done.stderr


def test_no_credentials_for_the_store_is_one_line(magazines: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env |= {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"}
    env |= {"AWS_EC2_METADATA_DISABLED": "true"}
    args = ["ingest", "amazon2018", magazines, "--out", str(tmp_path / "out")]
    done = subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "error: no credentials for the object store (Unable to locate credentials): "
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
    ]


@pytest.mark.parametrize("name", ["Magazine_Subscriptions_5.json", "meta_Magazine_Subscriptions.json.gz"])
def test_a_block_task_run_again_reads_its_lines_again(magazines: str, s3: str, name: str) -> None:
    """A block's task only reads (its byte range of a plain object, or its zstd copy of a
    compressed one's lines), so a retry of it writes the same piece; so does the task that moves a
    range's line numbers (it writes beside the piece it reads)."""
    source = get_source("amazon2018")
    (role,) = source.roles_for(PurePosixPath(name))
    index = source.roles.index(role)
    task = FileTask(
        0, "amazon2018", index, role.table, f"{magazines}/{name}", "magazines", f"{s3}/retry", 256 << 10, None, 0
    )
    _, blocks = open_file(task)
    assert len(blocks) > 2 and all((b.span is None) == name.endswith(".gz") for b in blocks)
    first = read_block(blocks[1])
    written = {table: client().cat_file(path) for table, (path, _) in first.tables.items()}
    again = read_block(blocks[1])
    assert again == first
    assert {table: client().cat_file(path) for table, (path, _) in again.tables.items()} == written
    if blocks[1].span is None:
        return
    moved = shifted(Shift(task, first, 1000))
    rows = client().cat_file(moved.tables["interactions"][0])
    assert shifted(Shift(task, first, 1000)) == moved and client().cat_file(moved.tables["interactions"][0]) == rows
    lines = pl.read_parquet(io.BytesIO(written["interactions"]))["src_line"]
    assert pl.read_parquet(io.BytesIO(rows))["src_line"].to_list() == (lines + 1000).to_list()


def test_a_raw_objects_fingerprint_changes_with_its_bytes_and_reads_none_of_them(s3: str) -> None:
    """A raw object enters a fingerprint by its size, ETag and last-modified time from one HEAD:
    other bytes of the same size give another record, an unchanged object the same, and no byte of
    the object is sent for it."""
    fs, key = client(), f"{BUCKET}/fingerprint/ratings.csv"
    fs.pipe_file(key, b"user,item\nu1,i1\n")
    first = storage.fingerprint(f"s3://{key}")
    SERVED.clear()
    assert storage.fingerprint(f"s3://{key}") == first
    assert SERVED.bytes[f"/{key}"] == 0
    fs.pipe_file(key, b"user,item\nu2,i2\n")
    second = storage.fingerprint(f"s3://{key}")
    assert second["size"] == first["size"] == 16
    assert second["etag"] != first["etag"]


@pytest.mark.parametrize("suffix", ["", ".gz", ".bz2", ".zst"])
def test_an_object_read_as_a_stream_gives_the_blocks_of_the_local_file(
    s3: str, shared: Path, tmp_path: Path, suffix: str
) -> None:
    """The real Amazon 2018 Magazine Subscriptions reviews (their first 300,000 bytes, a line cut
    off, with a byte order mark and CRLF endings) read from an object, plain or compressed, come in
    the blocks of lines of the same file read from disk, whole or (plain) by byte range."""
    data = BOM + (shared / "amazon2018" / "Magazine_Subscriptions_5.json").read_bytes()[:300_000].replace(
        b"\n", b"\r\n"
    )
    packed = {"": data, ".gz": gzip.compress(data, mtime=0), ".bz2": bz2.compress(data)}
    local = tmp_path / f"reviews.json{suffix}"
    local.write_bytes(packed[suffix] if suffix != ".zst" else pa.compress(data, "zstd", asbytes=True))
    url = f"{s3}/streamed/{local.name}"
    client().put_file(str(local), url.removeprefix("s3://"))
    for chunk in (4096, 1 << 16):
        assert list(LineBlocks(url, chunk)) == list(LineBlocks(local, chunk))
    if suffix:
        return
    spans = [(start, min(start + 50_000, len(data))) for start in range(0, len(data), 50_000)]
    ranged = [list(LineBlocks(local, 4096, span=span)) for span in spans]
    assert [list(LineBlocks(url, 4096, span=span)) for span in spans] == ranged and len(ranged) == 7
    lines = [line for blocks in ranged for _, block, _ in blocks for line in block.split(b"\n")]
    assert lines == [line.removesuffix(b"\r") for line in data.removeprefix(BOM).split(b"\n")]


@pytest.mark.parametrize("variant", ["bom_crlf_no_final_break", "blank_lines_and_a_lone_cr", "one_line_no_break"])
def test_an_objects_byte_ranges_give_the_lines_of_the_local_files(
    s3: str, shared: Path, tmp_path: Path, variant: str
) -> None:
    """Real Yelp reviews with UTF-8 text, whatever their endings, in ranges of at most 150 bytes
    (lines longer than a range) with edges after every line break, between every CR and LF and in
    UTF-8 characters, read from an object: each range the blocks of the same range of the file on
    disk, and the ranges the file's lines."""
    data = variants(shared)[variant]
    local = tmp_path / "reviews.json"
    local.write_bytes(data)
    url = f"{s3}/ranges/{variant}.json"
    client().put_file(str(local), url.removeprefix("s3://"))
    utf8 = [at for at, byte in enumerate(data) if byte & 0xC0 == 0x80][::7]
    crlf = [m.start() + 1 for m in re.finditer(b"\r\n", data)]
    cuts = sorted({*range(0, len(data), 150), *line_starts(data), *utf8, *crlf})
    spans = list(zip(cuts, [*cuts[1:], len(data)], strict=True))
    blocks = [list(LineBlocks(local, 256, span=span)) for span in spans]
    assert [list(LineBlocks(url, 256, span=span)) for span in spans] == blocks
    assert [line for found in blocks for _, block, _ in found for line in block.split(b"\n")] == plain_lines(local)
    assert any(not found for found in blocks)  # a range that no line starts in


def test_a_block_copy_whose_put_fails_leaves_nothing_in_tmpdir(
    s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block copy for the store is written in TMPDIR and put in one PUT; when the PUT fails (here:
    no such bucket) the error reaches the task and the local copy is gone all the same."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    copy = ZstdCopy("s3://no-such-bucket/blocks/00000.zst")
    copy.write(b'{"reviewerID": "A1"}')
    copy.finish()
    assert list(tmp_path.iterdir())  # the copy, before its PUT
    with pytest.raises(Exception, match="bucket|Bucket|NoSuchBucket|Not Found"):
        copy.close()
    assert list(tmp_path.iterdir()) == []
