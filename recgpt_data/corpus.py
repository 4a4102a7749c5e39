"""The pre-training corpus: documents from pre-training users' histories, a token budget met by
seeded sampling of users, a seeded global shuffle across sources, and the sharded output (the
library of the ``pretrain_documents`` and ``write_pretrain`` stages).

:func:`build_documents` turns each pre-training user's history into chunked, token-counted
documents. :func:`write_corpus` writes the final folder's ``data/pretrain/train-*.parquet`` and
``validation-*.parquet`` and ``exports/pretrain.jsonl.gz`` (and an MDS copy when mosaicml-streaming
is installed); :func:`manifest` is what ``manifest.json`` says of them.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recgpt_data.chunking import (
    DOCUMENT_SCHEMA,
    MAX_TOKENS,
    TokenCounter,
    chunk_histories,
)
from recgpt_data.errors import UsageError
from recgpt_data.hashing import fnv1a64, unit_interval
from recgpt_data.histories import history_lines, iter_bucket_events
from recgpt_data.io.parquet import AtomicParquetWriter, write_parquet
from recgpt_data.pipeline.fingerprint import file_sha256
from recgpt_data.split import PRETRAIN, leaked
from recgpt_data.stage import Context, Drops, count

TRAIN = "train"
VALIDATION = "validation"
SPLITS = (TRAIN, VALIDATION)
SHARD_COLUMNS = ("text", "num_tokens", "source", "dataset", "user_id", "chunk_index", "num_items", "item_ids")
DOCUMENT_KEY = ("dataset", "user_id", "chunk_index")
KEY = "__shuffle_key"
PRETRAIN_DIR = Path("data") / "pretrain"
EXPORT = Path("exports") / "pretrain.jsonl.gz"
MDS_DIR = Path("exports") / "mds"


def salted(values: pl.Series, salt: str) -> pl.Series:
    """``values`` prefixed by ``salt``, so that one seed gives independent draws for each purpose."""
    return (salt + "\x1f" + values.cast(pl.String)).alias(values.name)


def assign_validation(documents: pl.DataFrame, fraction: float, seed: int) -> pl.DataFrame:
    """``documents`` with ``split``: ``validation`` for users whose seeded hash is below ``fraction``."""
    draw = unit_interval(salted(documents["user_id"], VALIDATION), seed)
    return documents.with_columns(
        pl.when(draw < fraction).then(pl.lit(VALIDATION)).otherwise(pl.lit(TRAIN)).alias("split")
    )


@dataclass
class Built:
    """One call's documents and what happened on the way: the interactions read, what was dropped
    or cut (by reason), and facts such as documents and chunked users."""

    documents: pl.DataFrame
    rows_in: int
    drops: Drops
    info: dict[str, Any] = field(default_factory=dict)


def build_documents(
    interactions: pl.LazyFrame,
    items: pl.LazyFrame,
    counter: TokenCounter,
    *,
    max_tokens: int = MAX_TOKENS,
    buckets: int = 1,
    validation_fraction: float = 0.001,
    seed: int = 0,
) -> Built:
    """Chunked, token-counted documents of the pre-training users in ``interactions`` (all users
    where there is no ``split`` column), ``buckets`` user buckets at a time."""
    rows_in = count(interactions)
    drops: Drops = Drops()
    info: dict[str, Any] = {}
    if "split" in interactions.collect_schema().names():
        pretrain = interactions.filter(pl.col("split") == PRETRAIN)
        drops.count("instruct_pool", rows_in - count(pretrain))
        interactions = pretrain
    parts = []
    for events in iter_bucket_events(interactions, items, buckets):
        info["events_without_item_row"] = info.get("events_without_item_row", 0) + events.without_item
        chunked = chunk_histories(history_lines(events.frame), counter, max_tokens)
        drops.count("empty_item_line", chunked.empty_lines)
        for name, n in chunked.cut.items():
            drops.change(f"cut_{name.lower()}", n)
        parts.append(chunked.documents)
    merged = pl.concat(parts) if parts else pl.DataFrame(schema=DOCUMENT_SCHEMA)
    documents = assign_validation(merged, validation_fraction, seed)
    info["documents"] = documents.height
    info["chunked_users"] = documents.filter(pl.col("chunk_index") > 0)["user_id"].n_unique()
    return Built(documents, rows_in, drops, info)


def verify_token_counts(documents: pl.DataFrame, counter: TokenCounter, fraction: float, seed: int) -> int:
    """Re-tokenize a seeded sample of ``documents`` and fail if any ``num_tokens`` differs;
    returns how many were checked."""
    sample = documents.filter(unit_interval(salted(documents["user_id"], "verify"), seed) < fraction)
    exact = counter.count(sample["text"].to_list())
    wrong = (exact != sample["num_tokens"].to_numpy()).sum()
    if wrong:
        raise AssertionError(
            f"{wrong} of {sample.height} documents have a num_tokens that differs from tokenizing their "
            "text; this tokenizer merges across line breaks: set exact_tokens = true"
        )
    return sample.height


def sample_to_budget(
    totals: pl.DataFrame, target_tokens: int | None, weights: Mapping[str, float], seed: int
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The users kept to meet ``target_tokens`` split across sources by ``weights`` (by each
    source's tokens where no weights are given), drawn in seeded order; and the budget report.

    ``totals`` holds one row per (source, dataset, user_id) with its ``tokens``. A source with
    fewer tokens than its share keeps all of them (the shortfall is reported)."""
    per_source = totals.group_by("source").agg(pl.col("tokens").sum()).sort("source")
    available = dict(zip(per_source["source"].to_list(), per_source["tokens"].to_list(), strict=True))
    if target_tokens is None:
        report = {s: {"available": t, "target": None, "kept": t} for s, t in available.items()}
        return totals, {"target_tokens": None, "sources": report}
    unknown = sorted(set(weights) - set(available))
    shares = {s: float(weights.get(s, 0.0)) if weights else float(t) for s, t in available.items()}
    total_share = sum(shares.values())
    if total_share <= 0:
        raise ValueError("the source weights give every present source a zero share")
    targets = {s: target_tokens * share / total_share for s, share in shares.items()}
    draw = unit_interval(salted(totals["dataset"] + "\x1f" + totals["user_id"], "budget"), seed)
    ordered = totals.with_columns(draw.alias("__draw")).sort(["source", "__draw", "dataset", "user_id"])
    ordered = ordered.with_columns(pl.col("tokens").cum_sum().over("source").alias("__cum"))
    target_of = pl.col("source").replace_strict(targets, return_dtype=pl.Float64)
    kept = ordered.filter(pl.col("__cum") <= target_of).drop("__draw", "__cum")
    kept_tokens = dict(kept.group_by("source").agg(pl.col("tokens").sum()).iter_rows())
    report = {
        s: {"available": available[s], "target": round(targets[s]), "kept": int(kept_tokens.get(s, 0))}
        for s in available
    }
    return kept, {"target_tokens": target_tokens, "weights_for_absent_sources": unknown, "sources": report}


def shuffle_key(frame: pl.DataFrame, seed: int) -> pl.Series:
    """Each document's seeded shuffle key: FNV-1a of (dataset, user_id, chunk_index)."""
    joined = frame["dataset"] + "\x1f" + frame["user_id"] + "\x1f" + frame["chunk_index"].cast(pl.String)
    return fnv1a64(salted(joined, "shuffle"), seed).alias(KEY)


def shard_ranges(sizes: pl.DataFrame, max_rows: int, max_bytes: int) -> list[tuple[int, int]]:
    """Consecutive row ranges ``[start, end)`` of at most ``max_rows`` rows and (unless one row is
    larger) ``max_bytes`` text bytes, in the given order."""
    ranges, start, rows, size = [], 0, 0, 0
    for index, length in enumerate(sizes["bytes"].to_list()):
        if rows and (rows + 1 > max_rows or size + length > max_bytes):
            ranges.append((start, index))
            start, rows, size = index, 0, 0
        rows, size = rows + 1, size + length
    if rows or not ranges:
        ranges.append((start, start + rows))
    return ranges


@dataclass
class ShardRecord:
    """One written shard: its path relative to the output folder, rows, tokens and sha256."""

    path: str
    rows: int
    tokens: int
    sha256: str


def shard_starts(keys: pl.DataFrame, split: str, max_rows: int, max_bytes: int) -> list[int]:
    """The first shuffle key of each shard of ``split``, from its documents' keys and text bytes
    (the validation split is one shard; an empty split has none)."""
    ordered = keys.filter(pl.col("split") == split).sort(KEY)
    if ordered.height == 0:
        return []
    ranges = shard_ranges(ordered, max_rows, max_bytes) if split == TRAIN else [(0, ordered.height)]
    return [int(ordered[KEY][start]) if start < ordered.height else 0 for start, _ in ranges]


def scatter(
    documents: pl.LazyFrame,
    kept: pl.DataFrame,
    starts: Mapping[str, list[int]],
    ctx: Context,
    batch_rows: int,
) -> dict[str, list[Path]]:
    """One pass over ``documents``, ``batch_rows`` rows at a time (a slice of the scan, so only its
    row groups are read): each kept user's document goes to the scratch file of the shard of its
    split whose key range holds its shuffle key. Returns each split's scratch files in shard order."""
    schema = {**{c: DOCUMENT_SCHEMA[c] for c in SHARD_COLUMNS}, KEY: pl.UInt64()}
    files = {split: [ctx.scratch / split / f"{i:05d}.parquet" for i in range(len(s))] for split, s in starts.items()}
    writers = {split: [AtomicParquetWriter(path, schema) for path in paths] for split, paths in files.items()}
    try:
        total = count(documents)
        for offset in range(0, total, batch_rows):
            batch = documents.slice(offset, batch_rows).collect()
            batch = batch.join(kept, on=["dataset", "user_id"], how="semi", maintain_order="left")
            batch = batch.with_columns(shuffle_key(batch, ctx.seed))
            for split, bounds in starts.items():
                part = batch.filter(pl.col("split") == split).select(*SHARD_COLUMNS, KEY)
                shard = np.searchsorted(np.array(bounds[1:], dtype=np.uint64), part[KEY].to_numpy(), side="right")
                for index in np.unique(shard):
                    writers[split][index].write(part.filter(pl.Series(shard == index)))
    finally:
        for split_writers in writers.values():
            for writer in split_writers:
                writer.close()
    return files


def write_shards(scratch: list[Path], split: str, ctx: Context) -> list[ShardRecord]:
    """Each scratch file of ``split`` sorted by shuffle key and written as
    ``data/pretrain/<split>-NNNNN-of-NNNNN.parquet``, one shard in memory at a time."""
    records = []
    for index, path in enumerate(scratch):
        frame = pl.read_parquet(path).sort([KEY, *DOCUMENT_KEY]).drop(KEY)
        path.unlink()
        relative = PRETRAIN_DIR / f"{split}-{index:05d}-of-{len(scratch):05d}.parquet"
        write_parquet(frame, ctx.out_dir / relative)
        tokens = int(frame["num_tokens"].sum())
        records.append(ShardRecord(relative.as_posix(), frame.height, tokens, file_sha256(ctx.out_dir / relative)))
    return records


def export_jsonl(paths: list[Path], target: Path) -> int:
    """The shards' texts as RecGPT's release format: gzip'd JSON lines ``{"text": ...}`` (mtime 0)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    rows = 0
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        for path in paths:
            for text in pl.read_parquet(path, columns=["text"])["text"].to_list():
                gz.write((json.dumps({"text": text}, ensure_ascii=False) + "\n").encode("utf-8"))
                rows += 1
    tmp.replace(target)
    return rows


def export_mds(shards: Mapping[str, list[Path]], target: Path) -> dict[str, dict[str, Any]]:
    """An MDS copy of each split (llm-foundry's streaming format: a ``text`` column), one folder per
    split under ``target``, rows in shard order; each folder is written under a temporary name and
    renamed into place."""
    from streaming import MDSWriter

    written = {}
    for split, paths in shards.items():
        if not paths:
            continue
        folder, tmp = target / split, target / f"{split}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        rows = 0
        with MDSWriter(out=str(tmp), columns={"text": "str"}, compression=None) as writer:
            for path in paths:
                for text in pl.read_parquet(path, columns=["text"])["text"].to_list():
                    writer.write({"text": text})
                    rows += 1
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        written[split] = {"path": folder.as_posix(), "rows": rows}
    return written


def require_streaming() -> None:
    """A clear error, before any work, where the MDS export is asked for but cannot be written."""
    if importlib.util.find_spec("streaming") is None:
        raise UsageError("mds = true needs mosaicml-streaming: pip install 'recgpt-data[mds]'")


@dataclass
class Written:
    """What :func:`write_corpus` wrote: the shards of each split, the budget report, the leak check,
    the exports, and the documents left out by the budget."""

    shards: dict[str, list[ShardRecord]]
    budget: dict[str, Any]
    leak_check: dict[str, int]
    exports: dict[str, Any]
    drops: Drops


def write_corpus(
    documents: pl.LazyFrame,
    held_out: pl.LazyFrame | None,
    ctx: Context,
    *,
    target_tokens: int | None = None,
    weights: Mapping[str, float] | None = None,
    shard_rows: int = 100_000,
    shard_bytes: int = 256 * 1024 * 1024,
    batch_rows: int = 20_000,
    jsonl: bool = True,
    mds: bool = False,
) -> Written:
    """Sample ``documents`` to the token budget, shuffle across sources, write the shards and exports
    into ``ctx.out_dir``, and prove no ``held_out`` pair is in the written shards."""
    rows_in = count(documents)
    totals = (
        documents.group_by(["source", "dataset", "user_id"])
        .agg(pl.col("num_tokens").sum().alias("tokens"))
        .sort(["source", "dataset", "user_id"])
        .collect(engine="streaming")
    )
    kept_users, budget = sample_to_budget(totals, target_tokens, weights or {}, ctx.seed)
    kept = kept_users.select("dataset", "user_id")
    keys = (
        documents.select(*DOCUMENT_KEY, "split", pl.col("text").str.len_bytes().alias("bytes"))
        .collect(engine="streaming")
        .join(kept, on=["dataset", "user_id"], how="semi")
    )
    drops = Drops()
    drops.count("budget_sampled_out", rows_in - keys.height)
    keys = keys.select(shuffle_key(keys, ctx.seed), "split", "bytes")
    starts = {split: shard_starts(keys, split, shard_rows, shard_bytes) for split in SPLITS}
    del keys
    scratch = scatter(documents, kept, starts, ctx, batch_rows)
    shards = {split: write_shards(scratch[split], split, ctx) for split in SPLITS}
    written = [ctx.out_dir / r.path for split in SPLITS for r in shards[split]]
    leak = {"held_out_pairs": 0, "leaked": 0}
    if held_out is not None:
        found = leaked(pl.scan_parquet(written).select("user_id", "item_ids"), held_out)
        leak = {"held_out_pairs": count(held_out.select("user_id", "item_id").unique()), "leaked": found.height}
        if found.height:
            raise AssertionError(f"{found.height} held-out (user, item) pairs are in the pre-training shards")
    exports: dict[str, Any] = {}
    train_paths = [ctx.out_dir / r.path for r in shards[TRAIN]]
    if jsonl:
        exports["jsonl"] = {"path": EXPORT.as_posix(), "rows": export_jsonl(train_paths, ctx.out_dir / EXPORT)}
    if mds:
        exports["mds"] = {
            split: {**info, "path": Path(info["path"]).relative_to(ctx.out_dir).as_posix()}
            for split, info in export_mds(
                {split: [ctx.out_dir / r.path for r in records] for split, records in shards.items()},
                ctx.out_dir / MDS_DIR,
            ).items()
        }
    return Written(shards, budget, leak, exports, drops)


def manifest(written: Written, tokenizer: dict[str, str], seed: int) -> dict[str, Any]:
    """``manifest.json``: the tokenizer the documents were counted with, the seed, and each split's
    rows, tokens and shards, with the budget, the leak check and the exports."""
    return {
        "tokenizer": tokenizer,
        "seed": seed,
        "pretrain": {
            "splits": {
                split: {
                    "rows": sum(r.rows for r in records),
                    "tokens": sum(r.tokens for r in records),
                    "shards": [asdict(r) for r in records],
                }
                for split, records in written.shards.items()
            },
            "budget": written.budget,
            "leak_check": written.leak_check,
            "exports": written.exports,
        },
    }
