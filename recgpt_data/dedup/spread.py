"""Near-duplicate clustering of strings spread over many buckets, as tasks with bounded memory.

The same clusters as :func:`recgpt_data.dedup.lsh.cluster_texts` over all buckets' strings at
once, computed in rounds of tasks over ``P`` shuffle partitions, none of which holds more than its
share of the data, and one task that holds the verified edges. Tasks pass each other files only by
name in ``folder`` (a local folder or an object-store prefix, so that they run on any node), and a
partition's task reads only the files written for its partition:

1. ``distinct`` (one task per partition): the documents every bucket shuffled to the partition by
   a stable hash of their text are grouped by their exact text (so equal strings meet, and no hash
   collision merges two texts); each distinct text gets a node id, its earliest ``first``, its
   summed ``count`` and its least ``best``; texts of ``ngram`` words or more get their MinHash
   signature (once, kept in the partition) and band keys, shuffled to band partitions by the key.
2. ``candidates`` (per band partition): texts sharing a (dataset, band, key) are linked to the one
   with the smallest ``first``, exactly as :func:`~recgpt_data.dedup.lsh.bucket_edges` links each
   bucket's members to its first member; the edges go to edge partitions by a hash of their first
   node, and (with verification) each edge partition's requests for its nodes' signatures go to
   the partitions that hold them.
3. ``gather`` (per partition, with verification): the signatures each edge partition asked this
   partition for, shuffled to it; the signatures thus travel with the edges that need them.
4. ``verify`` (per edge partition): distinct edges are counted (the candidate edges) and kept where
   the two signatures, sent to this partition in round 3, agree on at least the threshold.
5. ``components`` (one task): :func:`scipy.sparse.csgraph.connected_components` over the verified
   edges, with each component's smallest ``first`` (its root), summed ``count`` and least ``best``,
   shuffled back to the partitions of its nodes. This task holds the verified edge list and its
   nodes, nothing else.
6. ``resolve`` (per partition): each distinct text's component (or itself, alone) is written back
   to the buckets its documents came from, one file per bucket.

A document is a row ``(dataset, text, first, count, best, member)``: ``first`` orders documents
(the smallest first of a cluster is its root, and links go to the smallest first of a band key),
``member`` is the bucket's own id for the document. Nothing crosses datasets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from recgpt_data.dedup.lsh import NearDuplicateConfig, agreement, band_keys, optimal_banding
from recgpt_data.dedup.minhash import MinHasher
from recgpt_data.dedup.normalize import utf8_buffers, word_counts
from recgpt_data.hashing import fnv1a64
from recgpt_data.io.storage import Location, join, local_file, location_of

try:
    from recgpt_data.dedup import minhash_kernel
except ImportError:  # numba is not installed: polars hashes the strings
    minhash_kernel = None

DOC_SCHEMA = {
    "dataset": pl.String,
    "text": pl.String,
    "first": pl.Int64,
    "count": pl.Int64,
    "best": pl.Int64,
    "member": pl.Int64,
}
NODE_BITS = 40  # a node id is partition << NODE_BITS | index within the partition
PREFIX = 256  # characters of a text that choose its partition (equal texts share every prefix)
_MIX = np.uint64(0x9E3779B97F4A7C15)

Mapper = Callable[[Callable, Sequence], Iterable]


def partition_of(dataset: pl.Series, text: pl.Series, partitions: int) -> np.ndarray:
    """The shuffle partition of each (dataset, text): a stable hash of the dataset and the text's
    first :data:`PREFIX` characters."""
    key = dataset + "\x1f" + text.str.slice(0, PREFIX)
    return (string_hashes(key) % np.uint64(partitions)).astype(np.int64)


def string_hashes(values: pl.Series) -> np.ndarray:
    """FNV-1a 64 of each string of ``values`` (no nulls): the numbers of
    :func:`recgpt_data.hashing.fnv1a64`, from the compiled kernel where numba is installed."""
    return fnv1a64(values).to_numpy() if minhash_kernel is None else minhash_kernel.fnv1a64(*utf8_buffers(values))


def write_table(frame: pl.DataFrame, location: Location) -> None:
    """Write a scratch table that only later tasks of the same stage read (a local path, or an
    object-store URL, one PUT): Arrow IPC, uncompressed, the cheapest to write and to read back (a
    failed task fails the stage, whose prepare step starts its folder afresh)."""
    with local_file(location) as path:
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_ipc(path, compression="uncompressed")


def read_tables(files: Location | Sequence[Location]) -> pl.DataFrame:
    """The scratch tables ``files`` (written by :func:`write_table`) as one frame."""
    listed = [files] if isinstance(files, (Path, str)) else files
    return pl.scan_ipc([str(f) for f in listed], glob=False).collect()


def at(folder: Location | str, relative: str) -> Location:
    """The file ``relative`` in the task folder ``folder`` (a local path or an object-store URL)."""
    return join(location_of(folder), relative)


def shuffled(folder: Location | str, name: str, senders: int, receiver: int) -> list[Location]:
    """The files that ``senders`` tasks wrote with :func:`write_shuffled` as ``name/SSSSS-RRRRR.arrow``
    for ``receiver``: named, never listed, so that an object store's listing is not needed."""
    return [at(folder, f"{name}/{s:05d}-{receiver:05d}.arrow") for s in range(senders)]


def write_shuffled(frame: pl.DataFrame, part: np.ndarray, path: Callable[[int], Location], partitions: int) -> None:
    """Write ``frame``'s rows to one file per partition (``part`` gives each row's), empty ones too."""
    frame = frame.with_columns(pl.Series("_part", part, dtype=pl.Int64))
    for p in range(partitions):
        write_table(frame.filter(pl.col("_part") == p).drop("_part"), path(p))


def write_docs(docs: pl.DataFrame, folder: Location, bucket: int, partitions: int) -> None:
    """Shuffle one bucket's documents (columns :data:`DOC_SCHEMA`) into ``folder``."""
    docs = docs.select([pl.col(c).cast(t) for c, t in DOC_SCHEMA.items()]).with_columns(bucket=pl.lit(bucket, pl.Int64))
    part = partition_of(docs["dataset"], docs["text"], partitions)
    write_shuffled(docs, part, lambda p: at(folder, f"docs/{bucket:05d}-{p:05d}.arrow"), partitions)


@dataclass(frozen=True)
class Job:
    """One task of one round: the round's folder, the partition (or bucket) it works on, the counts
    of buckets and partitions, and the clustering configuration."""

    folder: str
    index: int
    buckets: int
    partitions: int
    config: NearDuplicateConfig


def _pair_partition(u: np.ndarray, partitions: int) -> np.ndarray:
    return (((u.astype(np.uint64) * _MIX) >> np.uint64(32)) % np.uint64(partitions)).astype(np.int64)


def distinct(job: Job) -> tuple[int, int]:
    """Round 1 on one partition; returns (the documents' summed count, distinct texts)."""
    folder, p, config = job.folder, job.index, job.config
    docs = read_tables(shuffled(folder, "docs", job.buckets, p))
    nodes = (
        docs.group_by("dataset", "text")
        .agg(pl.col("first").min(), pl.col("count").sum(), pl.col("best").min(), "bucket", "member")
        .sort("dataset", "first")
        .with_row_index("id")
        .with_columns(pl.col("id").cast(pl.Int64) + (p << NODE_BITS))
    )
    members = nodes.select("bucket", "member", "id").explode("bucket", "member")
    nodes = nodes.drop("bucket", "member")
    write_table(members, at(folder, f"members/{p:05d}.arrow"))
    write_table(nodes.select("id", "dataset", "first", "count", "best"), at(folder, f"nodes/{p:05d}.arrow"))
    long_ = nodes.filter(word_counts(nodes["text"]) >= config.ngram)
    banding = optimal_banding(
        config.threshold, config.num_perm, config.false_positive_weight, config.false_negative_weight
    )
    hasher = MinHasher(config.num_perm, config.seed, config.ngram)
    signatures = np.empty((long_.height, config.num_perm), dtype=np.uint32)
    for lo in range(0, long_.height, config.batch_size):
        signatures[lo : lo + config.batch_size] = hasher.signatures_of_normalized(
            long_["text"].slice(lo, config.batch_size)
        )
    if config.verify:
        held = pl.DataFrame(
            {"id": long_["id"], "sig": signatures}, schema={"id": pl.Int64, "sig": pl.Array(pl.UInt32, config.num_perm)}
        )  # one fixed-width array a row, sent on to the edge partitions that ask for it
        write_table(held, at(folder, f"signatures/{p:05d}.arrow"))
    keys = band_keys(signatures, banding.bands, banding.rows)
    bands = pl.DataFrame(
        {
            "dataset": np.repeat(long_["dataset"].to_numpy(), banding.bands),
            "band": np.tile(np.arange(banding.bands, dtype=np.int32), long_.height),
            "key": keys.reshape(-1),
            "id": np.repeat(long_["id"].to_numpy(), banding.bands),
            "first": np.repeat(long_["first"].to_numpy(), banding.bands),
        },
        schema={"dataset": pl.String, "band": pl.Int32, "key": pl.UInt64, "id": pl.Int64, "first": pl.Int64},
    )
    part = (bands["key"].to_numpy() % np.uint64(job.partitions)).astype(np.int64)
    write_shuffled(bands, part, lambda q: at(folder, f"bands/{p:05d}-{q:05d}.arrow"), job.partitions)
    return int(docs["count"].sum()), nodes.height


def candidates(job: Job) -> None:
    """Round 2 on one band partition: each band key's members linked to its smallest ``first``;
    with verification, each edge partition's requests for the signatures of its edges' nodes, sent
    to the partitions that hold them (``id``, ``to``: the edge partition)."""
    folder, q = job.folder, job.index
    bands = read_tables(shuffled(folder, "bands", job.partitions, q))
    names = bands["dataset"].unique().sort().to_list()  # datasets as small codes: a cheaper sort than strings
    edges = (
        bands.with_columns(pl.col("dataset").cast(pl.Enum(names)).to_physical())
        .sort("dataset", "band", "key", "first")
        .with_columns(pl.col("id").first().over("dataset", "band", "key").alias("v"))
        .filter(pl.col("id") != pl.col("v"))
        .select(pl.col("id").alias("u"), "v")
        .unique(maintain_order=True)
    )
    part = _pair_partition(edges["u"].to_numpy(), job.partitions)
    write_shuffled(edges, part, lambda r: at(folder, f"edges/{q:05d}-{r:05d}.arrow"), job.partitions)
    if job.config.verify:
        to = pl.Series("to", part, dtype=pl.Int64)
        wanted = pl.concat(
            [edges.select(pl.col("u").alias("id"), to), edges.select(pl.col("v").alias("id"), to)]
        ).unique(maintain_order=True)
        held = (wanted["id"].to_numpy() >> NODE_BITS).astype(np.int64)
        write_shuffled(wanted, held, lambda p: at(folder, f"wanted/{q:05d}-{p:05d}.arrow"), job.partitions)


def gather(job: Job) -> None:
    """Round 3 on one partition: the signatures of its nodes that edge partitions asked for, one
    file per edge partition (each node's once)."""
    folder, p = job.folder, job.index
    wanted = read_tables(shuffled(folder, "wanted", job.partitions, p)).unique().sort("to", "id")
    held = read_tables(at(folder, f"signatures/{p:05d}.arrow"))
    sent = wanted.join(held, on="id", how="inner", maintain_order="left")
    part = sent["to"].to_numpy()
    write_shuffled(sent.drop("to"), part, lambda r: at(folder, f"sent/{p:05d}-{r:05d}.arrow"), job.partitions)


def verify(job: Job) -> tuple[int, int]:
    """Round 4 on one edge partition; returns (candidate edges, verified edges)."""
    folder, r, config = job.folder, job.index, job.config
    edges = read_tables(shuffled(folder, "edges", job.partitions, r)).unique().sort("u", "v")
    u, v = edges["u"].to_numpy(), edges["v"].to_numpy()
    found = len(u)
    if config.verify and found:
        sent = read_tables(shuffled(folder, "sent", job.partitions, r)).sort("id")
        ids = sent["id"].to_numpy()
        signatures = sent["sig"].to_numpy()
        keep = agreement(signatures, np.searchsorted(ids, u), np.searchsorted(ids, v)) >= config.threshold
        u, v = u[keep], v[keep]
    write_table(
        pl.DataFrame({"u": u, "v": v}, schema={"u": pl.Int64, "v": pl.Int64}), at(folder, f"verified/{r:05d}.arrow")
    )
    return found, len(u)


def components(job: Job) -> None:
    """Round 5, one task: connected components of the verified edges, each node with its
    component's root (smallest ``first``), size (summed ``count``) and least ``best``, sent back to
    its node's partition."""
    folder = job.folder
    edges = read_tables([at(folder, f"verified/{r:05d}.arrow") for r in range(job.partitions)])
    u, v = edges["u"].to_numpy(), edges["v"].to_numpy()
    ids = np.unique(np.concatenate([u, v]))
    wanted = pl.Series("id", ids, dtype=pl.Int64)
    frames = [
        pl.scan_ipc(str(at(folder, f"nodes/{p:05d}.arrow"))).filter(pl.col("id").is_in(wanted.implode())).collect()
        for p in np.unique(ids >> NODE_BITS).tolist()
    ]
    schema = {"id": pl.Int64, "dataset": pl.String, "first": pl.Int64, "count": pl.Int64, "best": pl.Int64}
    nodes = pl.concat(frames).sort("id") if frames else pl.DataFrame(schema=schema)
    n = len(ids)
    graph = coo_matrix(
        (np.ones(len(u), dtype=np.int8), (np.searchsorted(ids, u), np.searchsorted(ids, v))), shape=(n, n)
    )
    _, label = connected_components(graph, directed=False)
    comps = nodes.with_columns(pl.Series("component", label, dtype=pl.Int64)).with_columns(
        pl.col("first").min().over("component").alias("root"),
        pl.col("count").sum().over("component").alias("size"),
        pl.col("best").min().over("component").alias("cbest"),
    )
    write_shuffled(
        comps.select("id", "root", "size", pl.col("cbest").alias("best")),
        (comps["id"].to_numpy() >> NODE_BITS).astype(np.int64),
        lambda p: at(folder, f"components/{p:05d}.arrow"),
        job.partitions,
    )


def resolve(job: Job) -> int:
    """Round 6 on one partition: every document's cluster (root, size, best), written back to its
    bucket; returns the summed count of the documents in clusters of more than one."""
    folder, p = job.folder, job.index
    nodes = read_tables(at(folder, f"nodes/{p:05d}.arrow"))
    comps = read_tables(at(folder, f"components/{p:05d}.arrow"))
    clusters = nodes.join(comps, on="id", how="left", suffix="_c").select(
        "id",
        pl.coalesce("root", "first").alias("root"),
        pl.coalesce("size", "count").alias("size"),
        pl.coalesce("best_c", "best").alias("best"),
        "count",
    )
    members = read_tables(at(folder, f"members/{p:05d}.arrow")).join(clusters, on="id", how="left")
    for b in range(job.buckets):
        mine = members.filter(pl.col("bucket") == b).select("member", "root", "size", "best")
        write_table(mine, at(folder, f"back/{p:05d}-{b:05d}.arrow"))
    return int(clusters.filter(pl.col("size") > 1)["count"].sum())


@dataclass(frozen=True)
class Spread:
    """What clustering across buckets found: documents (summed counts), distinct texts, candidate
    and verified edges, and documents (summed counts) in clusters of more than one."""

    documents: int
    distinct: int
    candidate_edges: int
    verified_edges: int
    clustered: int


def cluster_spread(
    folder: Location, buckets: int, partitions: int, config: NearDuplicateConfig, map_: Mapper
) -> Spread:
    """Cluster the documents that ``buckets`` buckets wrote with :func:`write_docs` under ``folder``
    (a local folder or an object-store prefix); afterwards bucket ``b`` reads its clusters with
    :func:`clusters_of`."""

    def jobs(n: int) -> list[Job]:
        return [Job(str(folder), i, buckets, partitions, config) for i in range(n)]

    counts = list(map_(distinct, jobs(partitions)))
    list(map_(candidates, jobs(partitions)))
    if config.verify:
        list(map_(gather, jobs(partitions)))
    edges = list(map_(verify, jobs(partitions)))
    list(map_(components, jobs(1)))
    clustered = sum(map_(resolve, jobs(partitions)))
    return Spread(
        sum(c for c, _ in counts),
        sum(d for _, d in counts),
        sum(c for c, _ in edges),
        sum(v for _, v in edges),
        clustered,
    )


def clusters_of(folder: Location, bucket: int, partitions: int) -> pl.DataFrame:
    """Bucket ``bucket``'s documents' clusters (of the ``partitions`` partitions that clustered
    them): ``member``, ``root``, ``size``, ``best``."""
    return read_tables(shuffled(folder, "back", partitions, bucket))
