"""The written pre-training shards as flat token arrays that a trainer memory-maps, as Megatron's
``.bin``/``.idx`` and nanoGPT's ``train.bin`` lay them out (the library of the ``pretrain_tokens``
stage).

For each ``data/pretrain/<split>-*.parquet`` shard that ``write_pretrain`` listed in ``manifest.json``
(in its order, which is the corpus' shuffled order), ``exports/tokens/<same name>.bin`` holds the token
ids of every document followed by EOS (uint16 where the vocabulary fits, else uint32, little-endian)
and ``.idx`` the end offset of each document in that array (int64). ``exports/tokens/manifest.json``
names the files with their dtype, counts and sha256, and the parquet shard each one was read from.
This module owns that layout: the trainer (:mod:`recgpt_train.tokens`) reads the files and lays out
text it tokenises in memory with the names and functions here.

It reads the published shards rather than a table, so it runs on the whole folder (it summarises
the run so far; user buckets do not fit a shuffled order that spans every bucket): each shard is one
task (:func:`tokenize_job`) on the run's engine, and the tokenizer's batch encoder spreads each
batch over the task's threads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from recgpt_data.corpus import SPLITS
from recgpt_data.io.storage import Location, fetched, join, local_file, location_of
from recgpt_data.tokenizer import load_tokenizer

TOKENS_DIR = Path("exports") / "tokens"
TOKENS_MANIFEST = TOKENS_DIR / "manifest.json"
EOS_TOKEN = "<|endoftext|>"
INDEX_DTYPE = np.dtype("<i8")
READ_ROWS = 8192  # rows of a shard read at a time, then encoded in runs bounded by bytes


@dataclass
class TokenShard:
    """One written token shard: its files relative to the output folder, sizes and provenance."""

    tokens: str
    index: str
    source: str
    source_sha256: str
    documents: int
    token_count: int
    num_tokens_mismatch: int
    tokens_sha256: str
    index_sha256: str


def token_dtype(tokenizer: Tokenizer) -> np.dtype:
    """uint16 where every id fits (GPT-NeoX-20B: 50,277), else uint32."""
    return np.dtype("<u2") if tokenizer.get_vocab_size(with_added_tokens=True) <= 2**16 else np.dtype("<u4")


def shard_files(stem: str) -> tuple[Path, Path]:
    """The token and index files, relative to the output folder, of the parquet shard named ``stem``."""
    return TOKENS_DIR / f"{stem}.bin", TOKENS_DIR / f"{stem}.idx"


def document_arrays(
    encoded: Sequence[Sequence[int]], eos_id: int, dtype: np.dtype, start: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Documents' ids as a token file lays them out: one flat array of ``dtype``, each document's ids
    followed by EOS; and as its index does, each document's end offset in that array (EOS included)
    counted from ``start``, the tokens before this batch."""
    sizes = np.fromiter((len(ids) + 1 for ids in encoded), dtype=np.int64, count=len(encoded))
    flat = np.fromiter((t for ids in encoded for t in (*ids, eos_id)), dtype=dtype, count=int(sizes.sum()))
    return flat, (start + np.cumsum(sizes)).astype(INDEX_DTYPE)


def read_tokens_manifest(folder: Path) -> dict[str, Any] | None:
    """A built folder's ``exports/tokens/manifest.json``; ``None`` where it has none."""
    path = folder / TOKENS_MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def text_runs(texts: pa.Array, max_bytes: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of consecutive runs of ``texts`` holding at most ``max_bytes`` of text each
    (a longer text makes a run of its own): what one ``encode_batch`` call is given, so that the
    encodings held at once (some hundred bytes per token) are bounded by bytes, not by documents."""
    ends = np.cumsum(pc.binary_length(texts).to_numpy(zero_copy_only=False))
    start = 0
    while start < len(ends):
        before = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, before + max_bytes, side="right")))
        yield start, stop - start
        start = stop


def tokenize_shard(
    parquet: Path, tokens_path: Path, index_path: Path, tokenizer: Tokenizer, eos_id: int, batch_bytes: int
) -> tuple[int, int, int, str, str]:
    """Append each document's ids and EOS to ``tokens_path`` and its end offset to ``index_path``,
    encoding documents of at most ``batch_bytes`` of text at a time; returns (documents, tokens,
    documents whose ``num_tokens`` differs from the ids written, EOS not counted, and the sha256 of
    the two files, hashed as they are written)."""
    dtype = token_dtype(tokenizer)
    documents = written = mismatched = 0
    tokens_hash, index_hash = hashlib.sha256(), hashlib.sha256()
    with open(tokens_path, "wb") as tokens_out, open(index_path, "wb") as index_out:
        for whole in pq.ParquetFile(parquet).iter_batches(batch_size=READ_ROWS, columns=["text", "num_tokens"]):
            for offset, length in text_runs(whole.column("text"), batch_bytes):
                batch = whole.slice(offset, length)
                encoded = tokenizer.encode_batch(batch.column("text").to_pylist(), add_special_tokens=False)
                ids, ends = document_arrays([e.ids for e in encoded], eos_id, dtype, written)
                for data, out, digest in (
                    (ids.tobytes(), tokens_out, tokens_hash),
                    (ends.tobytes(), index_out, index_hash),
                ):
                    out.write(data)
                    digest.update(data)
                lengths = np.diff(ends, prepend=written) - 1  # EOS not counted
                mismatched += int((lengths != batch.column("num_tokens").to_numpy()).sum())
                documents += len(encoded)
                written += len(ids)
    return documents, written, mismatched, tokens_hash.hexdigest(), index_hash.hexdigest()


@dataclass(frozen=True)
class ShardJob:
    """One task of the ``pretrain_tokens`` stage: the parquet shard ``source`` (relative to the
    final folder ``folder``), at ``position`` in its split's list in ``manifest.json``, tokenized
    into ``out_dir`` with the tokenizer file ``tokenizer`` (folders are local paths or, with the
    output in object storage, the store's URLs)."""

    split: str
    position: int
    source: str
    source_sha256: str
    folder: str
    out_dir: str
    tokenizer: str
    batch_bytes: int


def shard_jobs(
    manifest: dict[str, Any], folder: Location, out_dir: Location, tokenizer: Path, batch_bytes: int
) -> list[ShardJob]:
    """One job per shard that ``manifest`` (``write_pretrain``'s, of ``folder``) lists, in its order."""
    return [
        ShardJob(
            split, position, record["path"], record["sha256"], str(folder), str(out_dir), str(tokenizer), batch_bytes
        )
        for split in SPLITS
        for position, record in enumerate(manifest["pretrain"]["splits"][split]["shards"])
    ]


def tokenize_job(job: ShardJob) -> dict[str, Any]:
    """Tokenize one shard into ``out_dir/exports/tokens/`` (each file written under a temporary
    name, then renamed; for an ``out_dir`` in object storage written locally and put there, the
    shard read from a local copy); its :class:`TokenShard` record with its split and position."""
    tokenizer = load_tokenizer(job.tokenizer)
    out_dir = location_of(job.out_dir)
    tokens_rel, index_rel = shard_files(Path(job.source).stem)
    eos_id = tokenizer.token_to_id(EOS_TOKEN)
    with (
        fetched(join(location_of(job.folder), job.source)) as source,
        local_file(join(out_dir, tokens_rel.as_posix())) as tokens_path,
        local_file(join(out_dir, index_rel.as_posix())) as index_path,
    ):
        tokens_path.parent.mkdir(parents=True, exist_ok=True)
        tmp_tokens, tmp_index = (p.with_name(p.name + ".tmp") for p in (tokens_path, index_path))
        counts = tokenize_shard(source, tmp_tokens, tmp_index, tokenizer, eos_id, job.batch_bytes)
        tmp_tokens.replace(tokens_path)
        tmp_index.replace(index_path)
    shard = TokenShard(tokens_rel.as_posix(), index_rel.as_posix(), job.source, job.source_sha256, *counts)
    return {"split": job.split, "position": job.position, **asdict(shard)}


RECORD_SCHEMA = {
    "split": pl.String,
    "position": pl.Int64,
    **{f.name: pl.Int64 if f.type == "int" else pl.String for f in fields(TokenShard)},
}


def token_splits(records: pl.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Each split's :class:`TokenShard` records (as dicts), in ``manifest.json``'s order, from the
    jobs' records in any order."""
    names = [f.name for f in fields(TokenShard)]
    ordered = records.sort("split", "position")
    return {split: ordered.filter(pl.col("split") == split).select(names).to_dicts() for split in SPLITS}


def tokens_manifest(
    splits: dict[str, list[dict[str, Any]]], tokenizer: Tokenizer, eos_id: int, name: str, sha256: str
) -> dict[str, Any]:
    """``exports/tokens/manifest.json``: the arrays' dtypes, EOS, the tokenizer and every shard."""
    return {
        "dtype": token_dtype(tokenizer).str,
        "index_dtype": INDEX_DTYPE.str,
        "eos_id": eos_id,
        "eos_appended": True,
        "tokenizer": {"name": name, "sha256": sha256},
        "splits": splits,
    }
