"""Stable hashing of id strings: FNV-1a 64 over UTF-8 bytes, vectorised with numpy.

``pl.hash`` and Python's ``hash()`` change across versions and runs; every bucket, split and seeded
choice in this project goes through :func:`fnv1a64` instead, so outputs are the same everywhere.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)


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


def bucket(values: pl.Series, buckets: int, seed: int = 0) -> pl.Series:
    """Stable bucket number in ``[0, buckets)`` for each id."""
    return (fnv1a64(values, seed) % buckets).cast(pl.UInt32)


def unit_interval(values: pl.Series, seed: int = 0) -> pl.Series:
    """A stable pseudo-random number in ``[0, 1)`` for each id, for seeded splits and sampling."""
    return (fnv1a64(values, seed) // (1 << 11)).cast(pl.Float64) / float(1 << 53)
