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
the run so far; user buckets do not fit a shuffled order that spans every bucket). Each shard is cut
into row ranges of about the same tokens, each tokenized in its own task (:func:`tokenize_piece`) on
the run's engine, so that even one shard spreads over every worker; a shard of several pieces is then
joined in one cheap task (:func:`join_pieces`), the same bytes as the shard tokenized whole. The
tokenizer's batch encoder spreads each batch over the task's threads.
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
from recgpt_data.io.storage import Location, fetched, join, local_file, location_of, open_input, remove_tree
from recgpt_data.stage import Mapper
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


def row_batches(parquet: Location, rows: tuple[int, int]) -> Iterator[pa.RecordBatch]:
    """A shard's ``text`` and ``num_tokens`` of its rows ``[start, stop)``, at most ``READ_ROWS``
    rows at a time, read from only the row groups that hold them (in object storage by ranged reads
    of its footer and those row groups' columns, never the whole object)."""
    start, stop = rows
    with open_input(parquet) as handle:
        file = pq.ParquetFile(handle)
        first = 0
        for group in range(file.metadata.num_row_groups):
            at, first = first, first + file.metadata.row_group(group).num_rows
            if at >= stop or first <= start:
                continue
            for batch in file.iter_batches(READ_ROWS, row_groups=[group], columns=["text", "num_tokens"]):
                low, high = max(start - at, 0), min(stop - at, batch.num_rows)
                if low < high:
                    yield batch.slice(low, high - low)
                at += batch.num_rows


def tokenize_rows(
    parquet: Location, rows: tuple[int, int], files: tuple[Path, Path], tokenizer: Tokenizer, batch_bytes: int
) -> tuple[int, int, int, str, str]:
    """Write to the token file each document's ids and EOS of the shard's rows ``[start, stop)``,
    and to the index file its end offset counted from the first of them (``files``), encoding
    documents of at most ``batch_bytes`` of text at a time; returns (documents, tokens, documents
    whose ``num_tokens`` differs from the ids written, EOS not counted, and the sha256 of the two
    files, hashed as they are written)."""
    dtype, eos_id = token_dtype(tokenizer), tokenizer.token_to_id(EOS_TOKEN)
    documents = written = mismatched = 0
    tokens_hash, index_hash = hashlib.sha256(), hashlib.sha256()
    with open(files[0], "wb") as tokens_out, open(files[1], "wb") as index_out:
        for whole in row_batches(parquet, rows):
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


def piece_ranges(rows: int, tokens: int, piece_tokens: int) -> list[tuple[int, int]]:
    """A shard of ``rows`` documents and ``tokens`` tokens cut into consecutive row ranges of about
    ``piece_tokens`` tokens each (at least one row each; a shard of no rows is one empty range), so
    that a big shard spreads over many tasks."""
    pieces = max(1, min(rows, -(-tokens // piece_tokens)))
    cuts = [rows * i // pieces for i in range(pieces + 1)]
    return list(zip(cuts[:-1], cuts[1:], strict=True))


@dataclass(frozen=True)
class PieceJob:
    """One task of the ``pretrain_tokens`` stage: rows ``rows``, piece ``piece`` of ``pieces``, of
    the parquet shard ``source`` (relative to the final folder ``folder``), at ``position`` in its
    split's list in ``manifest.json``, tokenized with the tokenizer file ``tokenizer``. The only
    piece of a shard writes the shard's token files in ``out_dir``; a piece of several writes its
    own in ``scratch``, which :func:`join_pieces` then joins (folders are local paths or, with the
    output in object storage, the store's URLs)."""

    split: str
    position: int
    source: str
    source_sha256: str
    folders: tuple[str, str, str]  # the final folder, the output folder, the pieces' scratch folder
    tokenizer: str
    batch_bytes: int
    rows: tuple[int, int]
    piece: int
    pieces: int

    def shard_files(self) -> tuple[Location, Location]:
        """The shard's token and index files in the output folder."""
        root = location_of(self.folders[1])
        return tuple(join(root, path.as_posix()) for path in shard_files(Path(self.source).stem))

    def pieces_folder(self) -> Location:
        """The scratch folder of this shard's pieces."""
        return join(location_of(self.folders[2]), f"{self.split}-{self.position:05d}")

    def piece_files(self, piece: int) -> tuple[Location, Location]:
        """Piece ``piece``'s token and index files in the scratch folder."""
        return join(self.pieces_folder(), f"{piece:05d}.bin"), join(self.pieces_folder(), f"{piece:05d}.idx")

    def record(self, counts: tuple[int, int, int, str, str]) -> dict[str, Any]:
        """The shard's :class:`TokenShard` record, with its split and position, from its counts."""
        tokens, index = shard_files(Path(self.source).stem)
        shard = TokenShard(tokens.as_posix(), index.as_posix(), self.source, self.source_sha256, *counts)
        return {"split": self.split, "position": self.position, **asdict(shard)}


def piece_jobs(
    manifest: dict[str, Any],
    folders: tuple[Location, Location, Location],
    tokenizer: Path,
    batch_bytes: int,
    piece_tokens: int,
) -> list[PieceJob]:
    """The jobs of every shard that ``manifest`` (``write_pretrain``'s) lists, in its order, each
    shard cut into pieces of about ``piece_tokens`` tokens by the rows and tokens it records;
    ``folders`` are the final folder, the output folder and the pieces' scratch folder."""
    names = (str(folders[0]), str(folders[1]), str(folders[2]))
    jobs = []
    for split in SPLITS:
        for position, shard in enumerate(manifest["pretrain"]["splits"][split]["shards"]):
            ranges = piece_ranges(shard["rows"], shard["tokens"], piece_tokens)
            jobs += [
                PieceJob(
                    split,
                    position,
                    shard["path"],
                    shard["sha256"],
                    names,
                    str(tokenizer),
                    batch_bytes,
                    rows,
                    piece,
                    len(ranges),
                )
                for piece, rows in enumerate(ranges)
            ]
    return jobs


def tokenize_piece(job: PieceJob) -> tuple[PieceJob, tuple[int, int, int, str, str]]:
    """Tokenize one piece of a shard (each file written under a temporary name, then renamed; for a
    folder in object storage written locally and put there, the shard read by ranged reads); the
    job and its counts (see :func:`tokenize_rows`), for the only piece of a shard the shard's."""
    tokens_at, index_at = job.shard_files() if job.pieces == 1 else job.piece_files(job.piece)
    with (
        local_file(tokens_at) as tokens_path,
        local_file(index_at) as index_path,
    ):
        tokens_path.parent.mkdir(parents=True, exist_ok=True)
        tmp_tokens, tmp_index = (p.with_name(p.name + ".tmp") for p in (tokens_path, index_path))
        source = join(location_of(job.folders[0]), job.source)
        counts = tokenize_rows(
            source, job.rows, (tmp_tokens, tmp_index), load_tokenizer(job.tokenizer), job.batch_bytes
        )
        tmp_tokens.replace(tokens_path)
        tmp_index.replace(index_path)
    return job, counts


@dataclass(frozen=True)
class JoinJob:
    """The last task of a shard cut into pieces: any of its piece jobs, and each piece's documents,
    tokens and mismatched documents, in piece order."""

    job: PieceJob
    counts: tuple[tuple[int, int, int], ...]


JOIN_BYTES = 1 << 22  # bytes of a piece's file copied at a time (a multiple of the index's 8)


def join_pieces(task: JoinJob) -> dict[str, Any]:
    """A shard's token files from its pieces', in piece order: the token files one after another,
    each index's offsets shifted by the tokens of the pieces before it; each file written under a
    temporary name, hashed as written, then renamed, and the pieces removed. Returns the shard's
    record."""
    job = task.job
    tokens_hash, index_hash = hashlib.sha256(), hashlib.sha256()
    shifts = np.cumsum([0] + [tokens for _, tokens, _ in task.counts])
    with local_file(job.shard_files()[0]) as tokens_path, local_file(job.shard_files()[1]) as index_path:
        tokens_path.parent.mkdir(parents=True, exist_ok=True)
        tmp_tokens, tmp_index = (p.with_name(p.name + ".tmp") for p in (tokens_path, index_path))
        with open(tmp_tokens, "wb") as tokens_out, open(tmp_index, "wb") as index_out:
            for piece in range(job.pieces):
                tokens_at, index_at = job.piece_files(piece)
                with fetched(tokens_at) as tokens_in, fetched(index_at) as index_in:
                    for path, shift, out, digest in (
                        (tokens_in, None, tokens_out, tokens_hash),
                        (index_in, int(shifts[piece]), index_out, index_hash),
                    ):
                        with open(path, "rb") as handle:
                            while data := handle.read(JOIN_BYTES):
                                if shift is not None:
                                    data = (
                                        (np.frombuffer(data, dtype=INDEX_DTYPE) + shift).astype(INDEX_DTYPE).tobytes()
                                    )
                                out.write(data)
                                digest.update(data)
        tmp_tokens.replace(tokens_path)
        tmp_index.replace(index_path)
    remove_tree(job.pieces_folder())
    documents, tokens, mismatched = (sum(column) for column in zip(*task.counts, strict=True))
    return job.record((documents, tokens, mismatched, tokens_hash.hexdigest(), index_hash.hexdigest()))


def tokenize_shards(jobs: list[PieceJob], map_: Mapper) -> list[dict[str, Any]]:
    """Every shard's token files from its pieces' jobs, tokenized in tasks ``map_`` schedules, and
    those of shards of several pieces joined in one task per shard; the shards' records."""
    records, pieces = [], {}
    for job, counts in map_(tokenize_piece, jobs):
        if job.pieces == 1:
            records.append(job.record(counts))
        else:
            pieces.setdefault((job.split, job.position), {})[job.piece] = (job, counts[:3])
    joins = [JoinJob(done[0][0], tuple(done[i][1] for i in range(len(done)))) for done in pieces.values()]
    return records + list(map_(join_pieces, joins))


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
    splits: dict[str, list[dict[str, Any]]], dtype: str, eos_id: int, name: str, sha256: str
) -> dict[str, Any]:
    """``exports/tokens/manifest.json``: the arrays' dtypes, EOS, the tokenizer and every shard."""
    return {
        "dtype": dtype,
        "index_dtype": INDEX_DTYPE.str,
        "eos_id": eos_id,
        "eos_appended": True,
        "tokenizer": {"name": name, "sha256": sha256},
        "splits": splits,
    }
