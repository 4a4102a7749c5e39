"""Stable hashing of id strings: FNV-1a 64 over UTF-8 bytes, vectorised with numpy.

``pl.hash`` and Python's ``hash()`` change across versions and runs; every bucket, split and seeded
choice in this project goes through :func:`fnv1a64` instead, so outputs are the same everywhere.

FNV-1a alone is a poor source of draws: its prime is ``2**40 + 0x1b3``, so a string's last bytes
reach only bits 0-17 and 40-48 of the hash, and ids that differ in their last characters share
their top bits. Every seeded draw and order therefore goes through :func:`mixed64`, FNV-1a finished
by MurmurHash3's 64-bit finalizer (``fmix64``), in which every input bit moves every output bit.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
FMIX_SHIFT = np.uint64(33)
FMIX_C1 = np.uint64(0xFF51AFD7ED558CCD)
FMIX_C2 = np.uint64(0xC4CEB9FE1A85EC53)


def fnv1a64(values: pl.Series, seed: int = 0) -> pl.Series:
    """FNV-1a 64 of each string's UTF-8 bytes (prefixed by ``seed`` when non-zero); nulls stay null."""
    strings = values.cast(pl.String)
    if seed:
        strings = f"{seed}\x1f" + strings
    arrow = pc.cast(strings.to_arrow(), pa.large_string())
    if isinstance(arrow, pa.ChunkedArray):
        arrow = arrow.combine_chunks()
    n = len(arrow)
    _, offsets_buf, data_buf = arrow.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64, count=n + 1, offset=arrow.offset * 8)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    starts = offsets[:-1]
    lengths = np.diff(offsets)
    hashes = np.full(n, FNV_OFFSET, dtype=np.uint64)
    active = np.arange(n)
    for j in range(int(lengths.max()) if n else 0):
        active = active[lengths[active] > j]
        hashes[active] = (hashes[active] ^ data[starts[active] + j]) * FNV_PRIME
    out = pl.Series(values.name, hashes, dtype=pl.UInt64)
    return out.set(strings.is_null(), None) if strings.null_count() else out


def fmix64(hashes: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer of each value (wrapping ``uint64`` arithmetic): ``h ^= h >> 33;
    h *= 0xff51afd7ed558ccd; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53; h ^= h >> 33``."""
    h = hashes.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        h ^= h >> FMIX_SHIFT
        h *= FMIX_C1
        h ^= h >> FMIX_SHIFT
        h *= FMIX_C2
        h ^= h >> FMIX_SHIFT
    return h


def mixed64(values: pl.Series, seed: int = 0) -> pl.Series:
    """:func:`fnv1a64` of each string finished by :func:`fmix64`, so that all 64 bits depend on every
    byte: the hash behind seeded draws and orders; nulls stay null."""
    hashes = fnv1a64(values, seed)
    mixed = pl.Series(values.name, fmix64(hashes.fill_null(0).to_numpy()), dtype=pl.UInt64)
    return mixed.set(hashes.is_null(), None) if hashes.null_count() else mixed


def bucket(values: pl.Series, buckets: int, seed: int = 0) -> pl.Series:
    """Stable bucket number in ``[0, buckets)`` for each id."""
    return (fnv1a64(values, seed) % buckets).cast(pl.UInt32)


def unit_interval(values: pl.Series, seed: int = 0) -> pl.Series:
    """A stable pseudo-random number in ``[0, 1)`` for each id, for seeded splits and sampling: the top
    53 bits of :func:`mixed64` over ``2**53``."""
    return (mixed64(values, seed) // (1 << 11)).cast(pl.Float64) / float(1 << 53)
