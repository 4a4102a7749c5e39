"""The pre-training corpus: documents from pre-training users' histories, a token budget met by
seeded sampling of users, a seeded global shuffle across sources, and the sharded output (the
library of the ``pretrain_documents`` and ``write_pretrain`` stages).

:func:`build_documents` turns each pre-training user's history into chunked, token-counted
documents. :func:`write_corpus` writes the final folder's ``data/pretrain/train-*.parquet`` and
``validation-*.parquet`` and ``exports/pretrain.jsonl.gz`` (and an MDS copy when mosaicml-streaming
is installed) in rounds of tasks on a run's engine, per documents file and per shard (the
``write_pretrain`` stage's prepare step), which exchange their files through the folders of a
:class:`Layout`, in object storage where the run's output is; :func:`manifest` is what ``manifest.json`` says of them.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from functools import partial
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
from recgpt_data.hashing import mixed64, unit_interval
from recgpt_data.histories import history_lines, iter_bucket_events
from recgpt_data.io import storage
from recgpt_data.io.parquet import AtomicParquetWriter, RowGroupWriter, parquet_writer_at, write_scratch
from recgpt_data.io.storage import Location, fetched, is_remote, join, local_file, location_of, put, remove_tree
from recgpt_data.pipeline.fingerprint import file_sha256
from recgpt_data.split import PRETRAIN, held_out_pairs, leaked
from recgpt_data.stage import Drops, Mapper, count

TRAIN = "train"
VALIDATION = "validation"
SPLITS = (TRAIN, VALIDATION)
SHARD_COLUMNS = ("text", "num_tokens", "source", "dataset", "user_id", "chunk_index", "num_items", "item_ids")
SHARD_SCHEMA = {c: DOCUMENT_SCHEMA[c] for c in SHARD_COLUMNS}
DOCUMENT_KEY = ("dataset", "user_id", "chunk_index")
KEY = "__shuffle_key"
PRETRAIN_DIR = Path("data") / "pretrain"
EXPORT = Path("exports") / "pretrain.jsonl.gz"
MDS_DIR = Path("exports") / "mds"
LINE_BYTES = len('{"text": ""}\n')  # what a JSON line of the export adds to its text's bytes, escapes aside


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
    """Each document's seeded shuffle key: :func:`~recgpt_data.hashing.mixed64` of (dataset, user_id,
    chunk_index), so that a user's chunks and neighbouring ids land far apart in the order."""
    joined = frame["dataset"] + "\x1f" + frame["user_id"] + "\x1f" + frame["chunk_index"].cast(pl.String)
    return mixed64(salted(joined, "shuffle"), seed).alias(KEY)


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


def shard_slices(keys: pl.DataFrame, split: str, max_rows: int, max_bytes: int, slice_bytes: int) -> list[list[int]]:
    """Each shard of ``split`` as the first shuffle keys of its slices, consecutive key ranges of at
    most ``slice_bytes`` text bytes (unless one document is larger), the first of them the shard's
    own first key; from its documents' keys and text bytes (the validation split is one shard; an
    empty split has none)."""
    ordered = keys.filter(pl.col("split") == split).sort(KEY)
    if ordered.height == 0:
        return []
    ranges = shard_ranges(ordered, max_rows, max_bytes) if split == TRAIN else [(0, ordered.height)]
    starts = ordered[KEY]
    return [
        [
            int(starts[start + first])
            for first, _ in shard_ranges(ordered.slice(start, end - start), end - start, slice_bytes)
        ]
        for start, end in ranges
    ]


@dataclass(frozen=True)
class Layout:
    """Where one corpus write keeps its files: its tasks' scratch folder, the output folder (local
    paths or, with the output in object storage, the store's URLs, so that the tasks run on any
    node), and the seed of its draws. Every task of :func:`write_corpus` carries one."""

    scratch: str
    out_dir: str
    seed: int

    def path(self, *parts: str) -> Location:
        return join(location_of(self.scratch), "/".join(parts))

    def out(self, relative: str | Path) -> Location:
        """The output folder's file ``relative``."""
        return join(location_of(self.out_dir), Path(relative).as_posix())

    def files(self, *folder: str) -> list[str]:
        """The parquet files directly in scratch ``folder``, in name order (the documents files' order)."""
        root = self.path(*folder)
        return [str(join(root, name)) for name in storage.files(root) if name.endswith(".parquet") and "/" not in name]


@dataclass(frozen=True)
class FileTask:
    """One documents file (``index`` in the table's file order); for the scatter, each split's
    shards as their slices' first keys, and the rows read at a time."""

    layout: Layout
    index: int
    file: str
    slices: tuple[tuple[str, tuple[tuple[int, ...], ...]], ...] = ()
    batch_rows: int = 20_000


def read_totals(task: FileTask) -> int:
    """Round 1 for one documents file: each user's tokens, and each document's shuffle key, split
    and text bytes, into scratch; returns its rows."""
    frame = (
        pl.scan_parquet(task.file)
        .select("source", *DOCUMENT_KEY, "split", "num_tokens", pl.col("text").str.len_bytes().alias("bytes"))
        .collect()
    )
    name = f"{task.index:05d}.parquet"
    totals = frame.group_by(["source", "dataset", "user_id"]).agg(pl.col("num_tokens").sum().alias("tokens"))
    write_scratch(totals, task.layout.path("totals", name))
    keys = frame.select("dataset", "user_id", shuffle_key(frame, task.layout.seed), "split", "bytes")
    write_scratch(keys, task.layout.path("keys", name))
    return frame.height


@dataclass(frozen=True)
class BudgetTask:
    """Round 2, one task: the token budget over every user's tokens, and the key ranges of the
    shards and of their slices."""

    layout: Layout
    held_out: tuple[str, ...] | None
    target_tokens: int | None
    weights: tuple[tuple[str, float], ...]
    shard_rows: int
    shard_bytes: int
    slice_bytes: int


@dataclass(frozen=True)
class Plan:
    """What the budget task decided: each split's shards as their slices' first keys (see
    :func:`shard_slices`), the budget report, the documents kept and the held-out pairs the leak
    check looks for."""

    slices: dict[str, list[list[int]]]
    budget: dict[str, Any]
    kept: int
    held_out_pairs: int


def plan_shards(task: BudgetTask) -> Plan:
    """Round 2: the users kept to meet the budget (written to scratch for the scatter) and each
    split's shards and their slices from the kept documents' keys and text bytes."""
    layout = task.layout
    totals = (
        pl.scan_parquet(layout.files("totals"))
        .group_by(["source", "dataset", "user_id"])
        .agg(pl.col("tokens").sum())
        .sort(["source", "dataset", "user_id"])
        .collect()
    )
    kept_users, budget = sample_to_budget(totals, task.target_tokens, dict(task.weights), layout.seed)
    kept = kept_users.select("dataset", "user_id")
    write_scratch(kept, layout.path("kept.parquet"))
    keys = (
        pl.scan_parquet(layout.files("keys"))
        .join(kept.lazy(), on=["dataset", "user_id"], how="semi", maintain_order="left")
        .select(KEY, "split", "bytes")
        .collect()
    )
    slices = {split: shard_slices(keys, split, task.shard_rows, task.shard_bytes, task.slice_bytes) for split in SPLITS}
    pairs = 0
    if task.held_out is not None:
        pairs = count(pl.scan_parquet(list(task.held_out)).select("user_id", "item_id").unique())
    return Plan(slices, budget, keys.height, pairs)


def pieces_folder(split: str, shard: int) -> tuple[str, ...]:
    """The scratch folder of the pieces of shard ``shard`` of ``split``, one per documents file."""
    return ("pieces", split, f"{shard:05d}")


def scatter(task: FileTask) -> None:
    """Round 3 for one documents file, ``batch_rows`` rows at a time (a slice of the scan, so only
    its row groups are read): each kept user's document goes to this file's piece of the shard of
    its split whose key range holds its shuffle key, in a row group of the batch's documents of its
    slice, so that the shard's task reads a slice's rows alone (by the row groups' key statistics)
    while a task keeps one file open a shard, not one a slice."""
    schema = {**SHARD_SCHEMA, KEY: pl.UInt64()}
    kept = pl.read_parquet(task.layout.path("kept.parquet"))
    documents = pl.scan_parquet(task.file)
    owners = {split: [s for s, starts in enumerate(shards) for _ in starts] for split, shards in task.slices}
    bounds = {
        split: np.array([start for starts in shards for start in starts][1:], dtype=np.uint64)
        for split, shards in task.slices
    }
    with ExitStack() as stack:  # an error aborts every piece; success closes them into place
        writers: dict[tuple[str, int], AtomicParquetWriter] = {}
        for offset in range(0, count(documents), task.batch_rows):
            batch = documents.slice(offset, task.batch_rows).collect()
            batch = batch.join(kept, on=["dataset", "user_id"], how="semi", maintain_order="left")
            batch = batch.with_columns(shuffle_key(batch, task.layout.seed))
            for split, _ in task.slices:
                part = batch.filter(pl.col("split") == split).select(*SHARD_COLUMNS, KEY)
                where = np.searchsorted(bounds[split], part[KEY].to_numpy(), side="right")
                for index in np.unique(where).tolist():
                    shard = owners[split][index]
                    if (split, shard) not in writers:
                        path = task.layout.path(*pieces_folder(split, shard), f"{task.index:05d}.parquet")
                        writers[split, shard] = stack.enter_context(parquet_writer_at(path, schema))
                    writers[split, shard].write(part.filter(pl.Series(where == index)))


def json_line_bytes(texts: pl.Series) -> pl.Series:
    """Each text's bytes as a line of the JSON-lines export, as ``json.dumps(..., ensure_ascii=False)``
    writes it: two bytes for a quote, a backslash and ``\\b\\f\\n\\r\\t``, six for another control character."""
    short = texts.str.count_matches(r'["\\\x08\x0c\n\r\t]').cast(pl.Int64)
    other = texts.str.count_matches(r"[\x00-\x07\x0b\x0e-\x1f]").cast(pl.Int64)
    return (texts.str.len_bytes().cast(pl.Int64) + LINE_BYTES + short + 5 * other).alias("bytes")


def member_ranges(sizes: pl.Series, member_bytes: int) -> list[tuple[int, int]]:
    """Consecutive row ranges ``[start, end)`` of a shard whose JSON lines (their bytes ``sizes``,
    see :func:`json_line_bytes`) hold at most ``member_bytes`` bytes each (unless one line is
    larger): the gzip members of the shard's export, planned from its data alone. The shard's bytes
    are shared evenly between the fewest members that hold them, so that no member is a small
    remainder (a 66 MB shard at 64 MiB is two members of 33 MB, not 64 and 2) and the members'
    tasks take about as long each."""
    total = int(sizes.sum())
    members = max(1, -(-total // member_bytes))
    even = -(-total // members)
    return shard_ranges(sizes.alias("bytes").to_frame(), max(sizes.len(), 1), min(member_bytes, even))


@dataclass(frozen=True)
class ShardTask:
    """Round 4: shard ``index`` of the ``count`` shards of ``split``, its slices' first keys and the
    next shard's (none for the last), the held-out files, the most text bytes of a row group, and
    the uncompressed bytes of each gzip member of a train shard's export."""

    layout: Layout
    split: str
    index: int
    count: int
    starts: tuple[int, ...]
    end: int | None
    held_out: tuple[str, ...] | None
    row_group_bytes: int
    member_bytes: int


@dataclass(frozen=True)
class WrittenShard:
    """What round 4 wrote for one shard: its record, the held-out (user, item) pairs found in it
    (the leak check; empty is none), and, for a train shard, its export's member row ranges."""

    task: ShardTask
    record: ShardRecord
    leaked: list[tuple[str, str]]
    members: list[tuple[int, int]]


def write_shard(task: ShardTask) -> WrittenShard:
    """Round 4 for one shard, a slice at a time (so that a task holds about one slice and one row
    group, whatever the shard's size): each slice's rows of the pieces (only its row groups read)
    sorted by (shuffle key, document key) and appended to
    ``data/pretrain/<split>-NNNNN-of-NNNNN.parquet``, whose rows are so in the same total order as
    the whole shard sorted at once; each slice leak-checked against the held-out pairs, and, for a
    train shard, the JSON lines' bytes kept to cut it into the row ranges of its export's gzip members."""
    relative = PRETRAIN_DIR / f"{task.split}-{task.index:05d}-of-{task.count:05d}.parquet"
    pieces = pl.scan_parquet(task.layout.files(*pieces_folder(task.split, task.index)))
    ends = [*task.starts[1:], task.end]
    rows, tokens, found, sizes = 0, 0, set(), []
    held = None  # the held-out pairs, read once for every slice's leak check
    if task.held_out is not None:
        held = held_out_pairs(pl.scan_parquet(list(task.held_out))).collect()
    with local_file(task.layout.out(relative)) as target:
        with RowGroupWriter(target, SHARD_SCHEMA, "text", task.row_group_bytes) as writer:
            for start, end in zip(task.starts, ends, strict=True):
                rows_of = pl.col(KEY) >= pl.lit(start, pl.UInt64)
                if end is not None:
                    rows_of &= pl.col(KEY) < pl.lit(end, pl.UInt64)
                frame = pieces.filter(rows_of).collect().sort([KEY, *DOCUMENT_KEY]).drop(KEY)
                writer.write(frame)
                rows, tokens = rows + frame.height, tokens + int(frame["num_tokens"].sum())
                if held is not None:
                    found.update(leaked(frame.lazy().select("user_id", "item_ids"), held.lazy()).rows())
                if task.split == TRAIN:
                    sizes.append(json_line_bytes(frame["text"]))
        sha256 = file_sha256(target)
    remove_tree(task.layout.path(*pieces_folder(task.split, task.index)))
    record = ShardRecord(relative.as_posix(), rows, tokens, sha256)
    members = member_ranges(pl.concat(sizes), task.member_bytes) if sizes else []
    return WrittenShard(task, record, sorted(found), members)


def export_jsonl(texts: Sequence[str], target: Path) -> int:
    """``texts`` as RecGPT's release format: gzip'd JSON lines ``{"text": ...}`` (mtime 0, no file
    name), one gzip member written under a temporary name and renamed into place; returns its rows."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        for text in texts:
            gz.write((json.dumps({"text": text}, ensure_ascii=False) + "\n").encode("utf-8"))
    tmp.replace(target)
    return len(texts)


@dataclass(frozen=True)
class MemberTask:
    """Round 5: the gzip member ``target`` of the JSON-lines export, rows ``[start, end)`` of the
    train shard ``shard`` (none: the empty member of a corpus without train shards)."""

    target: str
    shard: str | None = None
    start: int = 0
    end: int = 0


def export_member(task: MemberTask) -> int:
    """One gzip member of the export (see :func:`export_jsonl`), its rows read as a slice of the
    shard's scan (only their row groups); returns its rows."""
    texts: list[str] = []
    if task.shard is not None:
        rows = pl.scan_parquet(task.shard).select("text").slice(task.start, task.end - task.start)
        texts = rows.collect()["text"].to_list()
    with local_file(location_of(task.target)) as target:
        return export_jsonl(texts, target)


def concatenate(parts: list[str], target: Location) -> None:
    """``parts`` one after another as ``target``, written under a temporary name and renamed into
    place: gzip members so joined are one gzip file (RFC 1952), which ``gzip`` and ``datasets`` read
    whole."""
    with local_file(target) as path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as out:
            for part in parts:
                with fetched(location_of(part)) as local, open(local, "rb") as member:
                    shutil.copyfileobj(member, out, 1 << 20)
        tmp.replace(path)


def export_members(layout: Layout, train: list[WrittenShard], map_: Mapper) -> int:
    """The JSON-lines export of the train shards: each member row range of each shard compressed as
    one gzip member in its own task, the members joined in shard and row order (one task); returns
    its rows. The ranges come from the shards' data alone, so the file is the same bytes whatever
    the workers. With no train shard it is one empty member, a valid empty gzip file."""
    tasks = [
        MemberTask(str(layout.path("jsonl", f"{i:05d}-{m:05d}.gz")), str(layout.out(shard.record.path)), start, end)
        for i, shard in enumerate(train)
        for m, (start, end) in enumerate(shard.members)
    ] or [MemberTask(str(layout.path("jsonl", "empty.gz")))]
    rows = sum(map_(export_member, tasks))
    list(map_(partial(concatenate, target=layout.out(EXPORT)), [[t.target for t in tasks]]))
    return rows


def export_mds(shards: Mapping[str, list[Location]], layout: Layout) -> dict[str, dict[str, Any]]:
    """An MDS copy of each split (llm-foundry's streaming format: a ``text`` column), one folder per
    split under the output folder's ``exports/mds/``, rows in shard order; each folder is written
    under a temporary name and renamed into place (for an output folder in object storage, written
    locally and its files put there)."""
    written = {}
    for split, paths in shards.items():
        if not paths:
            continue
        relative = (MDS_DIR / split).as_posix()
        folder = layout.out(relative)
        if is_remote(folder):
            with tempfile.TemporaryDirectory(prefix="recgpt-mds-") as work:
                rows = write_mds(paths, Path(work) / split)
                for name in storage.files(Path(work) / split):
                    put(Path(work) / split / name, join(folder, name))
        else:
            tmp = Path(folder).with_name(f"{split}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            rows = write_mds(paths, tmp)
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
        written[split] = {"path": relative, "rows": rows}
    return written


def write_mds(paths: Sequence[Location], folder: Path) -> int:
    """The ``text`` of the shards ``paths`` as an MDS dataset in ``folder``; returns its rows."""
    from streaming import MDSWriter

    rows = 0
    with MDSWriter(out=str(folder), columns={"text": "str"}, compression=None) as writer:
        for path in paths:
            for text in pl.read_parquet(path, columns=["text"])["text"].to_list():
                writer.write({"text": text})
                rows += 1
    return rows


def require_streaming() -> None:
    """A clear error, before any work, where the MDS export is asked for but cannot be written."""
    if importlib.util.find_spec("streaming") is None:
        raise UsageError("mds = true needs mosaicml-streaming: pip install 'recgpt-data[mds]'")


@dataclass
class Written:
    """What :func:`write_corpus` wrote: the shards of each split, the budget report, the leak check,
    the exports, and how many documents the budget left out. A small record: the ``write_pretrain``
    stage's prepare step hands it to the stage function as JSON (:meth:`to_json`)."""

    shards: dict[str, list[ShardRecord]]
    budget: dict[str, Any]
    leak_check: dict[str, int]
    exports: dict[str, Any]
    sampled_out: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Written:
        record = json.loads(text)
        shards = {split: [ShardRecord(**r) for r in records] for split, records in record.pop("shards").items()}
        return cls(shards=shards, **record)


def write_corpus(
    documents: Sequence[str],
    held_out: Sequence[str] | None,
    layout: Layout,
    map_: Mapper,
    *,
    target_tokens: int | None = None,
    weights: Mapping[str, float] | None = None,
    shard_rows: int = 100_000,
    shard_bytes: int = 256 * 1024 * 1024,
    slice_bytes: int = 32 * 1024 * 1024,
    row_group_bytes: int = 32 * 1024 * 1024,
    batch_rows: int = 20_000,
    member_bytes: int = 64 * 1024 * 1024,
    jsonl: bool = True,
    mds: bool = False,
) -> Written:
    """Sample the ``documents`` files to the token budget, shuffle across sources, write the shards
    and exports into ``layout.out_dir``, and prove no pair of the ``held_out`` files is in the
    written shards; every step that reads documents or shards runs in tasks ``map_`` schedules (per
    documents file, one for the budget, per shard, per gzip member of about ``member_bytes`` bytes of
    a train shard's JSON lines), the caller only plans. A shard's task reads it a slice of about
    ``slice_bytes`` text bytes at a time and writes row groups of at most ``row_group_bytes``.

    Each shard's rows are its documents sorted by (shuffle key, document key), a total order, and its
    row groups are cut by its rows alone, so the shards are the same bytes whatever the number of
    documents files, the slices and wherever the tasks ran."""
    held = tuple(held_out) if held_out is not None else None
    files = [FileTask(layout, index, file) for index, file in enumerate(documents)]
    rows_in = sum(map_(read_totals, files))
    weighted = tuple(sorted((weights or {}).items()))
    budget_task = BudgetTask(layout, held, target_tokens, weighted, shard_rows, shard_bytes, slice_bytes)
    [plan] = list(map_(plan_shards, [budget_task]))
    slices = tuple((split, tuple(map(tuple, plan.slices[split]))) for split in SPLITS)
    list(map_(scatter, [replace(task, slices=slices, batch_rows=batch_rows) for task in files]))
    tasks = []
    for split in SPLITS:
        shards = plan.slices[split]
        ends = [starts[0] for starts in shards[1:]] + [None] if shards else []  # where the next shard starts
        tasks += [
            ShardTask(layout, split, index, len(shards), tuple(starts), end, held, row_group_bytes, member_bytes)
            for index, (starts, end) in enumerate(zip(shards, ends, strict=True))
        ]
    done, found = {}, set()
    for shard in map_(write_shard, tasks):
        done[shard.task.split, shard.task.index] = shard
        found.update(shard.leaked)
    written = {split: [done[split, i] for i in range(len(plan.slices[split]))] for split in SPLITS}
    shards = {split: [shard.record for shard in written[split]] for split in SPLITS}
    leak = {"held_out_pairs": 0, "leaked": 0}
    if held is not None:
        leak = {"held_out_pairs": plan.held_out_pairs, "leaked": len(found)}
        if found:
            raise AssertionError(f"{len(found)} held-out (user, item) pairs are in the pre-training shards")
    exports: dict[str, Any] = {}
    if jsonl:
        exports["jsonl"] = {"path": EXPORT.as_posix(), "rows": export_members(layout, written[TRAIN], map_)}
    if mds:
        split_paths = {split: [layout.out(r.path) for r in records] for split, records in shards.items()}
        [exports["mds"]] = list(map_(partial(export_mds, layout=layout), [split_paths]))
    return Written(shards, plan.budget, leak, exports, rows_in - plan.kept)


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
