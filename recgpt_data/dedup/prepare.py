"""The ``dedup`` stage's prepare step: the four scopes' cross-bucket work as tasks on the run's
engine, each holding one bucket or one shuffle partition, never a whole dataset. The tasks pass
each other files by name in the step's task folder (the store's, with the output in object
storage), so they run on any node.

Interactions come in user buckets. In rounds of tasks (``P`` = the bucket count):

1. ``rows`` (per bucket): each row's chronological position in its dataset (its own bucket's
   sorted keys plus, bucket by bucket, how many of another bucket's rows sort before it), the
   normalised text, the keep score and scope (a)'s variant copies (one user's rows, so local);
   the bucket's distinct texts shuffled as documents (:mod:`recgpt_data.dedup.spread`).
2. review texts clustered across buckets (:func:`~recgpt_data.dedup.spread.cluster_spread`).
3. ``users`` (per bucket): scope (c)'s history of each user as a document; clustered likewise.
4. ``decide`` (per bucket): each row's cluster, whether its user is a duplicate, the item uses
   that scope (d) counts, and each shared cluster's best remaining keep score, shuffled by cluster.
5. ``best`` (per partition): each cluster's best score over all buckets, sent back per bucket.
6. ``marks`` (per bucket): which rows are text copies; one file of decisions per bucket.
7. items: scope (d). ``mark`` and ``off`` cut the items table into chunks of rows; the chunks'
   item texts are clustered across them like review texts and each chunk writes its rows with
   their clusters. ``remap`` runs one task per dataset (:func:`dedup_items`), which needs the
   interactions each item kept after scopes (a) and (c).

The buckets then apply their marks (:func:`recgpt_data.dedup.scopes.apply_marks`); the items table
is written whole by the items tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import polars as pl

from recgpt_data.dedup.scopes import (
    COUNTERS,
    DedupParams,
    ItemDedup,
    bucket_rows,
    dedup_items,
    history_docs,
    item_text,
    text_docs,
)
from recgpt_data.dedup.spread import (
    at,
    cluster_spread,
    clusters_of,
    partition_of,
    read_tables,
    shuffled,
    write_docs,
    write_shuffled,
    write_table,
)
from recgpt_data.errors import UsageError
from recgpt_data.io.parquet import write_parquet, write_scratch
from recgpt_data.io.storage import Location, join, location_of, remove_tree
from recgpt_data.schema import CHRONOLOGICAL
from recgpt_data.stage import DROP_REASON, Context, Preparation, Prepared

KEYS = ["dataset", *CHRONOLOGICAL]
ROW_COLUMNS = ["_bucket_row", "dataset", "user_id", "item_id", "rating", "_pos", "_rank", "_tid", "_variant"]


@dataclass(frozen=True)
class Job:
    """One task: the scratch folder (a local folder or an object-store prefix), the bucket,
    partition or dataset it works on, every bucket's interaction files, the items files and the
    parameters."""

    scratch: str
    index: int
    interactions: tuple[tuple[str, ...], ...]
    items: tuple[str, ...]
    params: DedupParams
    dataset: str | None = None

    @property
    def folder(self) -> Location:
        return location_of(self.scratch)

    @property
    def partitions(self) -> int:
        return len(self.interactions)


def _read(files: tuple[str, ...], columns: list[str]) -> pl.DataFrame:
    return pl.scan_parquet(list(files)).select(columns).collect()


def _refuse_ties_across(both: pl.DataFrame) -> None:
    """Rows of one raw line tie on the chronological keys when they share a timestamp (Steam's
    user-review file holds a user's reviews on one line, often several posted on one day). They are
    one user's rows, so in one bucket, whose row order is the input order that breaks the tie in one
    process too. Rows of two buckets that tie could not be ordered the same way: refused. ``both``
    holds two buckets' keys sorted, ``_other`` telling them apart, so a tie is two neighbours."""
    tie = pl.all_horizontal(pl.col(k).eq_missing(pl.col(k).shift(1)) for k in KEYS) & (
        pl.col("_other") != pl.col("_other").shift(1)
    )
    if both.select(tie.fill_null(False).any()).item():
        raise UsageError(
            f"dedup: interactions of two users share ({', '.join(KEYS[1:])}), so their chronological "
            "order is not defined"
        )


def positions(job: Job) -> pl.DataFrame:
    """Each row of bucket ``job.index`` (``_bucket_row``) with ``_pos``, its position in its
    dataset's chronological order: its rank in its own bucket plus, for each other bucket (read one
    at a time), how many of that bucket's rows of the dataset sort before it. A stable sort keeps
    the bucket's own rows in their order among the other bucket's, so the counts line up with them."""
    own = _read(job.interactions[job.index], KEYS).with_row_index("_bucket_row")
    own = own.sort(KEYS, maintain_order=True).with_columns(pl.int_range(pl.len()).over("dataset").alias("_pos"))
    for other, files in enumerate(job.interactions):
        if other == job.index:
            continue
        both = pl.concat(
            [own.select(*KEYS, pl.lit(0).alias("_other")), _read(files, KEYS).with_columns(pl.lit(1).alias("_other"))]
        ).sort(KEYS, maintain_order=True)
        _refuse_ties_across(both)
        before = both.select(pl.col("_other").cum_sum().over("dataset").filter(pl.col("_other") == 0))
        own = own.with_columns(pl.col("_pos") + before.to_series())
    return own.select("_bucket_row", pl.col("_pos").cast(pl.Int64))


def rows(job: Job) -> int:
    """Round 1 for one bucket: its rows' positions, texts and variant copies, and its distinct
    texts shuffled; returns its empty texts."""
    params = job.params
    columns = [*KEYS, "user_id", "item_id", "rating", "review_text", "helpful_votes"]
    frame = _read(job.interactions[job.index], columns).with_row_index("_bucket_row")
    frame = frame.join(positions(job), on="_bucket_row", how="left")
    items = pl.DataFrame(schema={"dataset": pl.String, "item_id": pl.String, "title": pl.String})
    if params.variants and job.items:
        items = (
            pl.scan_parquet(list(job.items))
            .select("dataset", "item_id", "title")
            .join(
                frame.lazy().select("dataset", "item_id").unique(),
                on=["dataset", "item_id"],
                how="semi",
                maintain_order="left",
            )
            .collect()
        )
    marked = bucket_rows(frame, items, params)
    docs, marked = text_docs(marked)
    write_docs(docs, join(job.folder, "texts"), job.index, job.partitions)
    write_table(marked.select(ROW_COLUMNS), at(job.folder, f"rows/{job.index:05d}.arrow"))
    return int(marked["_tid"].null_count())


def _clustered_rows(job: Job) -> pl.DataFrame:
    """Bucket ``job.index``'s rows with their review-text ``cluster_id`` and ``cluster_size``."""
    texts = clusters_of(join(job.folder, "texts"), job.index, job.partitions).select(
        pl.col("member").alias("_tid"), pl.col("root").alias("cluster_id"), pl.col("size").alias("cluster_size")
    )
    marked = read_tables(at(job.folder, f"rows/{job.index:05d}.arrow"))
    return marked.join(texts, on="_tid", how="left", maintain_order="left")


def users(job: Job) -> None:
    """Round 3 for one bucket: its users' histories (rows left after scope a) as documents."""
    docs, listed = history_docs(_clustered_rows(job).filter(~pl.col("_variant")), job.params)
    write_docs(docs, join(job.folder, "users"), job.index, job.partitions)
    write_table(listed, at(job.folder, f"users/list/{job.index:05d}.arrow"))


def decide(job: Job) -> int:
    """Round 4 for one bucket: duplicate users' rows, item uses and each shared cluster's best
    remaining keep score (shuffled by cluster); returns the bucket's duplicate users."""
    marked = _clustered_rows(job)
    dropped = 0
    if job.params.users:
        listed = read_tables(at(job.folder, f"users/list/{job.index:05d}.arrow"))
        found = clusters_of(join(job.folder, "users"), job.index, job.partitions).select(
            "member", pl.col("best").alias("_cbest")
        )
        gone = listed.join(found, on="member").filter(pl.col("best") != pl.col("_cbest")).select("dataset", "user_id")
        dropped = gone.height
        marked = marked.join(gone.with_columns(pl.lit(True).alias("_user")), on=["dataset", "user_id"], how="left")
        marked = marked.with_columns(pl.col("_user").fill_null(False) & ~pl.col("_variant"))
    else:
        marked = marked.with_columns(pl.lit(False).alias("_user"))
    left = marked.filter(~pl.col("_variant") & ~pl.col("_user"))
    if job.params.items == "remap":
        uses = left.group_by("dataset", "item_id").agg(pl.len().cast(pl.Int64).alias("_uses"))
        write_table(uses, at(job.folder, f"uses/{job.index:05d}.arrow"))
    shared = (
        left.filter(pl.col("cluster_size") > 1)
        .group_by("dataset", "cluster_id")
        .agg(pl.col("_rank").min().alias("_best"))
        .with_columns(pl.lit(job.index, pl.Int64).alias("bucket"))
    )
    part = partition_of(shared["dataset"], shared["cluster_id"].cast(pl.String), job.partitions)
    write_shuffled(shared, part, lambda p: at(job.folder, f"best/{job.index:05d}-{p:05d}.arrow"), job.partitions)
    columns = ["_bucket_row", "cluster_id", "cluster_size", "_variant", "_user", "_rank"]
    write_table(marked.select(columns), at(job.folder, f"decided/{job.index:05d}.arrow"))
    return dropped


def best(job: Job) -> None:
    """Round 5 for one partition: each shared cluster's best remaining score over all buckets,
    sent back to each bucket that holds it."""
    sent = read_tables(shuffled(job.folder, "best", job.partitions, job.index))
    sent = sent.with_columns(pl.col("_best").min().over("dataset", "cluster_id"))
    for b in range(job.partitions):
        mine = sent.filter(pl.col("bucket") == b).select("cluster_id", "_best", "dataset")
        write_table(mine, at(job.folder, f"back/{job.index:05d}-{b:05d}.arrow"))


def marks(job: Job) -> str:
    """Round 6 for one bucket: its rows' decisions, text copies included; returns the file."""
    decided = read_tables(at(job.folder, f"decided/{job.index:05d}.arrow"))
    rows_ = read_tables(at(job.folder, f"rows/{job.index:05d}.arrow")).select("_bucket_row", "dataset")
    back = read_tables(shuffled(job.folder, "back", job.partitions, job.index))
    decided = decided.join(rows_, on="_bucket_row").join(back, on=["dataset", "cluster_id"], how="left")
    copy = pl.col("_best").is_not_null() & ~pl.col("_variant") & ~pl.col("_user") & (pl.col("_rank") != pl.col("_best"))
    path = at(job.folder, f"marks/{job.index:05d}.parquet")
    write_scratch(
        decided.select(
            pl.lit(job.index, pl.Int64).alias("_bucket"),
            "_bucket_row",
            "cluster_id",
            "cluster_size",
            "_variant",
            "_user",
            copy.alias("_copy"),
        ),
        path,
    )
    return str(path)


def item_file(scratch: str, kind: str, index: int) -> Location:
    """The items tasks' file ``index`` of ``kind``: ``kept`` (the stage's items), ``lost`` (the
    duplicates remap drops) or ``remap`` (their kept items)."""
    return at(scratch, f"items/{kind}/{index:05d}.parquet")


def item_datasets(files: tuple[str, ...]) -> list[str]:
    """The datasets of the items table."""
    if not files:
        return []
    return sorted(pl.scan_parquet(list(files)).select("dataset").unique().collect()["dataset"].to_list())


def items(job: Job) -> tuple[int, int, int]:
    """Round 7 for one dataset: scope (d) over its items; returns (items in clusters of two or
    more, items dropped, items kept)."""
    params = job.params
    chosen = pl.col("dataset") == job.dataset if job.dataset is not None else pl.lit(False)
    table = pl.scan_parquet(list(job.items)).filter(chosen).collect()
    if params.items == "off":
        done = ItemDedup(table, table.clear(), pl.DataFrame(), 0)
    else:
        uses = pl.DataFrame(schema={"dataset": pl.String, "item_id": pl.String, "_uses": pl.Int64})
        if params.items == "remap":
            uses = (
                pl.scan_ipc([str(at(job.folder, f"uses/{b:05d}.arrow")) for b in range(job.partitions)], glob=False)
                .filter(chosen)
                .group_by("dataset", "item_id")
                .agg(pl.col("_uses").sum())
                .collect()
            )
        done = dedup_items(table, uses, params)
    write_parquet(done.items, item_file(job.scratch, "kept", job.index))
    if params.items == "remap":
        lost = done.lost.with_columns(pl.lit("duplicate_item", dtype=pl.String).alias(DROP_REASON))
        write_parquet(lost, item_file(job.scratch, "lost", job.index))
        write_scratch(done.remap, item_file(job.scratch, "remap", job.index))
    return done.clustered, done.lost.height, done.items.height


@dataclass(frozen=True)
class ItemChunk:
    """Rows ``offset`` to ``offset + length`` of one items file, and each dataset's rows in the
    chunks before it (so a row's position within its dataset is known)."""

    scratch: str
    index: int
    file: str
    offset: int
    length: int
    partitions: int
    params: DedupParams
    before: tuple[tuple[str, int], ...] = ()

    @property
    def folder(self) -> Location:
        return at(self.scratch, "items")

    def scan(self) -> pl.LazyFrame:
        return pl.scan_parquet(self.file).slice(self.offset, self.length)


def item_rows(file: str) -> tuple[str, int]:
    """One items file and its rows (from its footer)."""
    return file, pl.scan_parquet(file).select(pl.len()).collect().item()


def item_counts(chunk: ItemChunk) -> tuple[int, list[tuple[str, int]]]:
    """Round 7a for one items chunk: its index and its rows per dataset."""
    return chunk.index, chunk.scan().group_by("dataset", maintain_order=True).len().collect().rows()


def item_docs(chunk: ItemChunk) -> None:
    """Round 7b for one items chunk: its items with a text as documents (first = the item's
    position among its dataset's items, as the single-process scope numbered them)."""
    before = pl.DataFrame(list(chunk.before), schema={"dataset": pl.String, "_before": pl.Int64}, orient="row")
    frame = (
        chunk.scan()
        .select("dataset", "title", "brand", "description")
        .collect()
        .with_row_index("member")
        .join(before, on="dataset", how="left", maintain_order="left")
        .with_columns(
            (pl.int_range(pl.len()).over("dataset") + pl.col("_before").fill_null(0)).alias("first"),
            item_text().alias("text"),
        )
    )
    docs = frame.filter(pl.col("text").str.len_bytes() > 0).select(
        "dataset", "text", "first", pl.lit(1).alias("count"), pl.lit(0).alias("best"), "member"
    )
    write_docs(docs, chunk.folder, chunk.index, chunk.partitions)


def item_marks(chunk: ItemChunk) -> tuple[int, int]:
    """Round 7c for one items chunk: its rows with their cluster (``mark``) or as they are
    (``off``), written as the stage's items; returns (items in clusters of two or more, rows)."""
    frame = chunk.scan().collect()
    clustered = 0
    if chunk.params.items == "mark":
        found = clusters_of(chunk.folder, chunk.index, chunk.partitions).select(
            "member", pl.col("root").alias("cluster_id"), pl.col("size").alias("cluster_size")
        )
        frame = (
            frame.with_row_index("member")
            .with_columns(pl.col("member").cast(pl.Int64))
            .join(found, on="member", how="left", maintain_order="left")
            .drop("member")
        )
        clustered = int(frame["cluster_size"].fill_null(1).gt(1).sum())
    write_parquet(frame, item_file(chunk.scratch, "kept", chunk.index))
    return clustered, frame.height


def _item_chunks(
    prep: Preparation, scratch: str, files: tuple[str, ...], buckets: int, params: DedupParams
) -> list[ItemChunk]:
    """The items table cut into about ``buckets`` chunks of rows, each knowing the rows of each
    dataset before it."""
    rows = dict(prep.map(item_rows, list(files)))  # results come in any order
    size = max(1, -(-sum(rows.values()) // buckets))
    chunks = [
        ItemChunk(scratch, 0, file, offset, min(size, rows[file] - offset), buckets, params)
        for file in files
        for offset in range(0, rows[file], size)
    ]
    chunks = [replace(c, index=k) for k, c in enumerate(chunks)]
    counts = dict(prep.map(item_counts, chunks))
    seen: dict[str, int] = {}
    planned = []
    for chunk in chunks:
        found = counts[chunk.index]
        planned.append(replace(chunk, before=tuple(seen.items())))
        for name, n in found:
            seen[name] = seen.get(name, 0) + n
    return planned


def _items_in_chunks(prep: Preparation, chunks: list[ItemChunk], params: DedupParams) -> list[tuple[int, int, int]]:
    """Scope (d) marked (or off) chunk by chunk, the items clustered across chunks like texts."""
    if params.items == "mark":
        list(prep.map(item_docs, chunks))
        config = params.config(params.item_threshold, params.ngram)
        cluster_spread(chunks[0].folder, len(chunks), chunks[0].partitions, config, prep.map)
    return [(clustered, 0, rows) for clustered, rows in prep.map(item_marks, chunks)]


def prepare_dedup(prep: Preparation, params: DedupParams, ctx: Context) -> Prepared:
    """The dedup stage's prepare step (see the module docstring), its tasks passing their files
    through the step's task folder (the store's, where it is lent one: they run on any node)."""
    folder = join(prep.task_folders(ctx).scratch, "dedup")
    remove_tree(folder)  # what an interrupted attempt left
    scratch = str(folder)
    interactions = tuple(prep.buckets["interactions"])
    item_files = tuple(f for files in prep.buckets["items"] for f in files)
    buckets = len(interactions)

    def jobs(n: int) -> list[Job]:
        return [Job(scratch, i, interactions, item_files, params) for i in range(n)]

    info = dict.fromkeys(COUNTERS, 0)
    info["empty_texts"] = sum(prep.map(rows, jobs(buckets)))
    texts = cluster_spread(
        join(folder, "texts"), buckets, buckets, params.config(params.threshold, params.ngram), prep.map
    )
    info.update(
        candidate_edges=texts.candidate_edges,
        verified_edges=texts.verified_edges,
        exact_duplicate_texts=texts.documents - texts.distinct,
        texts_in_duplicate_clusters=texts.clustered,
    )
    if params.users:
        list(prep.map(users, jobs(buckets)))
        cluster_spread(join(folder, "users"), buckets, buckets, params.config(params.user_threshold, 1), prep.map)
    info["duplicate_users"] = sum(prep.map(decide, jobs(buckets)))
    list(prep.map(best, jobs(buckets)))
    marked = sorted(prep.map(marks, jobs(buckets)))
    chunks = _item_chunks(prep, scratch, item_files, buckets, params) if params.items != "remap" else []
    if chunks:
        done = _items_in_chunks(prep, chunks, params)
    else:
        names = list(prep.map(item_datasets, [item_files]))[0]
        jobs_ = [Job(scratch, k, interactions, item_files, params, name) for k, name in enumerate(names or [None])]
        done = list(prep.map(items, jobs_))
    info["items_in_duplicate_clusters"] = sum(c for c, _, _ in done)

    def files(kind: str) -> tuple[str, ...]:
        return tuple(str(item_file(scratch, kind, k)) for k in range(len(done)))

    whole = {"items": files("kept")}
    tables = {"dedup_marks": tuple(marked)}
    stats = {"rows_out": {"items": sum(k for _, _, k in done)}}
    if params.items == "remap":
        whole["dropped_items"] = files("lost")
        tables["dedup_remap"] = files("remap")
        stats["dropped"] = {"duplicate_item": sum(n for _, n, _ in done)}
    return Prepared(tables=tables, info=info, outputs=whole, stats=stats)
