"""``write_pretrain`` and ``pretrain_tokens`` run their work as tasks (per documents file, per shard,
per gzip member of a row range of a train shard, per row range of a token shard): the demo and
samples builds give the same final folder, byte for byte, with one worker, the documents in the
spec's user buckets, each shard written in one slice and each token shard one task as with two
workers, the documents in another number of buckets, each shard written a few slices at a time and
the token shards cut into several row ranges each; both cut each train shard's JSON-lines export
into several gzip members."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import zlib
from itertools import accumulate
from pathlib import Path

import datasets
import pyarrow.parquet as pq
from conftest import CLI, REPO, folder_digests
from token_shards import assert_token_shards

DEMO_SHARD_ROWS = 2000  # pipelines/demo.toml's, for the demo with its token arrays and the same shards
ONE_PIECE = 10**12  # pretrain_tokens' piece_tokens that keeps every shard one task
PIECE_TOKENS = 500  # and one that cuts the demo's token shards into several row ranges (of a document or more)
SAMPLES_PIECE_TOKENS = 600_000  # and the samples' into a few each
DEMO_SHARD_ROWS_CUT = 4  # a write_pretrain max_rows that cuts the demo's 11 train documents into 3 shards
DEMO_MEMBER_BYTES = 8_192  # write_pretrain's member_bytes that cuts the demo's shards (10 to 18 KB) into members
SAMPLES_MEMBER_BYTES = 1 << 20  # and the samples' (a few MB each)
DEMO_SLICE_BYTES = 4_096  # write_pretrain's slice_bytes that writes the demo's shards a few slices at a time
SAMPLES_SLICE_BYTES = 1 << 19  # and the samples'
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00"  # deflate, no flags, mtime 0


def corpus_spec(
    name: str,
    target: Path,
    shard_rows: int,
    documents_partitions: int | None,
    piece_tokens: int = ONE_PIECE,
    member_bytes: int | None = None,
    slice_bytes: int | None = None,
) -> Path:
    """``pipelines/<name>.toml`` with smaller shards (several per split), the token arrays right after
    them in tasks of ``piece_tokens`` tokens, and, where given, ``pretrain_documents`` in
    ``documents_partitions`` user buckets, the export in gzip members of ``member_bytes`` and the
    shards written in slices of ``slice_bytes``."""
    text = (REPO / "pipelines" / f"{name}.toml").read_text(encoding="utf-8")
    members = "" if member_bytes is None else f"params.member_bytes = {member_bytes}\n"
    if slice_bytes is not None:
        members += f"params.slice_bytes = {slice_bytes}\n"
    text, found = re.subn(
        r"(stage = \"write_pretrain\"\n)params\.shard_rows = \d+\n",
        rf"\1params.shard_rows = {shard_rows}\n{members}\n"
        rf'[[stages]]\nstage = "pretrain_tokens"\nparams.piece_tokens = {piece_tokens}\n',
        text,
    )
    assert found == 1
    if documents_partitions is not None:
        text = text.replace(
            'stage = "pretrain_documents"\n', f'stage = "pretrain_documents"\npartitions = {documents_partitions}\n'
        )
    target.write_text(text, encoding="utf-8")
    return target


def rebuild(built: Path, spec: Path, out: Path, *args: str) -> None:
    """A copy of the built folder ``built`` run again with ``spec`` through ``pretrain_tokens`` (what
    changed reruns; the stages after it are not run)."""
    shutil.copytree(built, out)
    done = subprocess.run(
        [str(CLI), "run", str(spec), "--out", str(out), "--until", "pretrain_tokens", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr


def document_files(out: Path) -> int:
    return len(list((out / ".stages" / "pretrain_documents" / "documents").glob("*.parquet")))


def assert_same_bytes(
    built: Path, name: str, sizes: tuple[int, int, int, int, int], tmp_path: Path, tokenizer: Path, *args: str
) -> None:
    """``built`` rerun with several shards a split and gzip members of ``member_bytes``, with one
    worker, the spec's user buckets, each shard in one slice and a task per token shard and with two
    workers, ``documents`` in ``partitions`` files, shards in slices of ``slice_bytes`` and token
    shards cut into row ranges: the same final folder, whose token files and JSON-lines export a
    plain reading checks."""
    shard_rows, member_bytes, partitions, piece_tokens, slice_bytes = sizes
    one, two = tmp_path / "one", tmp_path / "two"
    one_spec = corpus_spec(name, tmp_path / "one.toml", shard_rows, None, member_bytes=member_bytes)
    rebuild(built, one_spec, one, "--workers", "1", *args)
    two_spec = corpus_spec(name, tmp_path / "two.toml", shard_rows, partitions, piece_tokens, member_bytes, slice_bytes)
    rebuild(built, two_spec, two, "--workers", "2", *args)
    assert document_files(two) == partitions != document_files(one)
    shards = json.loads((one / "manifest.json").read_text())["pretrain"]["splits"]["train"]["shards"]
    assert len(shards) > 2  # several shards, each its own task
    texts = [pq.read_table(one / s["path"], columns=["text"])["text"] for s in shards]
    assert sum(sum(map(len, (t.encode() for t in text.to_pylist()))) > 2 * slice_bytes for text in texts) > 1
    assert sum(s["tokens"] > 2 * piece_tokens and s["rows"] > 2 for s in shards) > 1  # and cut into pieces
    assert folder_digests(two) == folder_digests(one)
    assert_token_shards(two, tokenizer)
    assert not list((two / ".stages" / "pretrain_tokens").rglob("*.bin"))  # no piece left behind
    tokens = json.loads((one / "exports" / "tokens" / "manifest.json").read_text())
    assert [s["source"] for s in tokens["splits"]["train"]] == [s["path"] for s in shards]
    assert_jsonl_members(two, shards, member_bytes, tmp_path / "hf-cache")


def test_the_demo_corpus_is_the_same_bytes_whatever_the_workers_and_documents_files(
    demo_corpus: Path, shared: Path, tmp_path: Path
) -> None:
    sizes = (DEMO_SHARD_ROWS_CUT, DEMO_MEMBER_BYTES, 5, PIECE_TOKENS, DEMO_SLICE_BYTES)
    assert_same_bytes(demo_corpus, "demo", sizes, tmp_path, tokenizer_file(shared))


def test_the_samples_corpus_is_the_same_bytes_whatever_the_workers_and_documents_files(
    samples_corpus: Path, shared: Path, tmp_path: Path
) -> None:
    assert_same_bytes(
        samples_corpus,
        "samples",
        (1500, SAMPLES_MEMBER_BYTES, 3, SAMPLES_PIECE_TOKENS, SAMPLES_SLICE_BYTES),
        tmp_path,
        tokenizer_file(shared),
        "--var",
        f"shared={shared}",
    )


def tokenizer_file(shared: Path) -> Path:
    """A copy of the bundled tokenizer outside the package, for the plain reading."""
    return shared.parent / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"


def gzip_members(raw: bytes) -> list[tuple[bytes, bytes]]:
    """Each gzip member of ``raw``, in order: its first bytes (its header) and its decompressed
    bytes; a member ends where its deflate stream and trailer end."""
    members = []
    while raw:
        reader = zlib.decompressobj(wbits=31)
        data = reader.decompress(raw) + reader.flush()
        assert reader.eof
        members.append((raw[: len(GZIP_HEADER)], data))
        raw = reader.unused_data
    return members


def assert_jsonl_members(out: Path, shards: list[dict], member_bytes: int, cache: Path) -> None:
    """The JSON-lines export is several gzip members per train shard (a header with mtime 0 and no
    name each; whole lines, at most ``member_bytes`` each unless one line is larger), joined in shard
    order: ``gzip`` and ``datasets`` read the file whole, every train text once, in the shards' order."""
    tables = [pq.read_table(out / s["path"], columns=["text"])["text"].to_pylist() for s in shards]
    lines = [[(json.dumps({"text": t}, ensure_ascii=False) + "\n").encode() for t in table] for table in tables]
    rendered = b"".join(line for shard in lines for line in shard)
    raw = (out / "exports" / "pretrain.jsonl.gz").read_bytes()
    members = gzip_members(raw)
    assert len(members) > len(shards)
    assert {header for header, _ in members} == {GZIP_HEADER}
    for _, data in members:
        assert data.endswith(b"\n") and (len(data) <= member_bytes or data.count(b"\n") == 1)
    shard_ends = set(accumulate(sum(map(len, shard)) for shard in lines))
    assert shard_ends <= set(accumulate(len(data) for _, data in members))  # no member spans two shards
    assert b"".join(data for _, data in members) == rendered
    assert gzip.decompress(raw) == rendered
    loaded = datasets.load_dataset("json", data_files=str(out / "exports" / "pretrain.jsonl.gz"), cache_dir=str(cache))
    assert loaded["train"]["text"] == [t for table in tables for t in table]
