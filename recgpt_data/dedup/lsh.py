"""LSH banding and near-duplicate clustering of texts.

Bands x rows are chosen for a Jaccard threshold exactly as ``datasketch.MinHashLSH`` chooses them:
the pair minimising the weighted areas under the S-curve below the threshold (false positives)
and above it (false negatives). Each band's ``rows`` values are hashed to one 64-bit key; texts
sharing a key in any band are candidates. Inside a bucket every member is linked to the bucket's
first member only, so a bucket of a million template reviews costs a million edges, not 5 * 10^11
pairs; union-find then closes the clusters.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import polars as pl
from scipy.integrate import quad

from recgpt_data.dedup.minhash import MinHasher
from recgpt_data.dedup.normalize import word_counts
from recgpt_data.dedup.unionfind import connected_components

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def collision_probability(similarity: np.ndarray | float, bands: int, rows: int) -> np.ndarray | float:
    """The S-curve: probability that a pair of Jaccard ``similarity`` shares at least one band."""
    return 1.0 - (1.0 - np.asarray(similarity, dtype=float) ** rows) ** bands


@dataclass(frozen=True)
class Banding:
    """An LSH banding and its expected error areas at ``threshold``."""

    threshold: float
    bands: int
    rows: int
    false_positive_area: float
    false_negative_area: float

    def describe(self) -> str:
        """One line for logs and stats."""
        return (
            f"LSH threshold {self.threshold:g}: {self.bands} bands x {self.rows} rows "
            f"(false-positive area {self.false_positive_area:.4f}, false-negative area {self.false_negative_area:.4f})"
        )


def _areas(threshold: float, bands: int, rows: int) -> tuple[float, float]:
    fp, _ = quad(lambda s: 1 - (1 - s ** float(rows)) ** float(bands), 0.0, threshold)
    fn, _ = quad(lambda s: 1 - (1 - (1 - s ** float(rows)) ** float(bands)), threshold, 1.0)
    return fp, fn


@lru_cache(maxsize=64)
def optimal_banding(
    threshold: float, num_perm: int = 128, false_positive_weight: float = 0.5, false_negative_weight: float = 0.5
) -> Banding:
    """The bands x rows (bands * rows <= num_perm) minimising the weighted error, as datasketch does
    (remembered: every task of a run asks for the same few)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    best: tuple[float, int, int, float, float] | None = None
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp, fn = _areas(threshold, bands, rows)
            error = fp * false_positive_weight + fn * false_negative_weight
            if best is None or error < best[0]:
                best = (error, bands, rows, fp, fn)
    assert best is not None
    return Banding(threshold, best[1], best[2], best[3], best[4])


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per (text, band): FNV-1a over the band's 32-bit values, seeded by the band."""
    n = signatures.shape[0]
    keys = np.empty((n, bands), dtype=np.uint64)
    for band in range(bands):
        key = np.full(n, _FNV_OFFSET ^ np.uint64(band), dtype=np.uint64)
        for col in range(band * rows, (band + 1) * rows):
            key ^= signatures[:, col].astype(np.uint64)
            key *= _FNV_PRIME
        keys[:, band] = key
    return keys


def bucket_edges(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges (member, first member) of every bucket of every band; no pairs inside a bucket."""
    us, vs = [], []
    for band in range(keys.shape[1] if keys.shape[0] else 0):
        order = np.argsort(keys[:, band], kind="stable")
        sorted_keys = keys[order, band]
        starts = np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]])
        group = np.cumsum(starts) - 1
        first = order[starts]
        member = ~starts
        us.append(order[member])
        vs.append(first[group[member]])
    if not us:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    n = np.int64(keys.shape[0])
    pair = np.unique(np.concatenate(us).astype(np.int64) * n + np.concatenate(vs))
    return pair // n, pair % n


def agreement(signatures: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """For each edge (``u[i]``, ``v[i]``), the share of MinHash values the two rows of
    ``signatures`` agree on (the estimate of their Jaccard similarity), in chunks of 65,536 edges
    so that no edges x permutations array is built whole."""
    agree = np.empty(len(u), dtype=np.float64)
    for lo in range(0, len(u), 1 << 16):
        s = slice(lo, lo + (1 << 16))
        agree[s] = (signatures[u[s]] == signatures[v[s]]).mean(axis=1)
    return agree


@dataclass(frozen=True)
class Clusters:
    """Near-duplicate clusters of a column of normalised texts, by row."""

    label: np.ndarray  # int64: smallest row of the row's cluster; -1 for empty texts
    exact: np.ndarray  # int64: smallest row with the same normalised text; -1 for empty texts
    banding: Banding
    candidate_edges: int
    verified_edges: int


@dataclass(frozen=True)
class NearDuplicateConfig:
    """How texts are compared: threshold, MinHash shape and whether candidates are verified."""

    threshold: float = 0.8
    num_perm: int = 128
    ngram: int = 5
    seed: int = 1
    false_positive_weight: float = 0.5
    false_negative_weight: float = 0.5
    verify: bool = True
    batch_size: int = 16384
    threads: int = 2  # signature batches computed at once (numpy and the MinHash kernels release the GIL)


def cluster_texts(norm: pl.Series, config: NearDuplicateConfig) -> Clusters:
    """Cluster normalised texts: exact duplicates by equal text, near duplicates by MinHash LSH.

    Texts shorter than ``ngram`` words are clustered by their exact normalised text only. With
    ``verify``, a candidate edge is kept only where the two signatures agree on at least
    ``threshold`` of their values (the MinHash estimate of their Jaccard similarity).
    """
    norm = norm.fill_null("")
    first_of_row = (
        pl.DataFrame({"norm": norm})
        .with_row_index("row")
        .select(pl.col("row").min().over("norm"))
        .to_series()
        .to_numpy()
        .astype(np.int64)
    )
    first_row = np.flatnonzero(first_of_row == np.arange(len(norm)))
    u_of_row = np.searchsorted(first_row, first_of_row)
    unique = pl.DataFrame({"norm": norm.gather(first_row)})
    words = word_counts(unique["norm"]).to_numpy()
    banding = optimal_banding(
        config.threshold, config.num_perm, config.false_positive_weight, config.false_negative_weight
    )
    long_ = np.flatnonzero(words >= config.ngram)
    hasher = MinHasher(config.num_perm, config.seed, config.ngram)
    long_texts = unique["norm"].gather(long_)
    keys = np.empty((len(long_), banding.bands), dtype=np.uint64)
    signatures = np.empty((len(long_), config.num_perm), dtype=np.uint32) if config.verify else None

    def batch(lo: int) -> None:
        sig = hasher.signatures_of_normalized(long_texts.slice(lo, config.batch_size))
        keys[lo : lo + len(sig)] = band_keys(sig, banding.bands, banding.rows)
        if signatures is not None:
            signatures[lo : lo + len(sig)] = sig

    with ThreadPoolExecutor(max_workers=config.threads) as pool:
        list(pool.map(batch, range(0, len(long_), config.batch_size)))
    eu, ev = bucket_edges(keys)
    candidates = len(eu)
    if signatures is not None and candidates:
        keep = agreement(signatures, eu, ev) >= config.threshold
        eu, ev = eu[keep], ev[keep]
    roots = connected_components(len(unique), long_[eu], long_[ev])
    label_u = first_row[roots]
    exact_u = first_row.copy()
    empty = words == 0
    label_u[empty] = -1
    exact_u[empty] = -1
    return Clusters(label_u[u_of_row], exact_u[u_of_row], banding, candidates, len(eu))
