"""Text normalisation and word shingling for duplicate detection.

One normalisation is used for exact and near-duplicate detection alike: lowercase, every run of
digits (with an optional decimal part) becomes ``0``, punctuation and symbols become spaces,
whitespace runs become one space, and the ends are stripped. A shingle is ``ngram`` consecutive
words joined by one space, as UTF-8 bytes; a text with fewer words than ``ngram`` has one
shingle, the whole normalised text, and an empty text has none.

:func:`shingles` is the plain-Python definition (what a user feeds to ``datasketch.MinHash``);
:func:`shingle_spans` computes the same shingles for many texts at once as byte ranges of one
buffer, without building a Python object per shingle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

NUMBER = r"\p{Nd}+(?:[.,]\p{Nd}+)?"
SEPARATORS = r"(?:[^\w]|_)+"  # punctuation, symbols, underscores and whitespace: runs become one space


def normalize_expr(column: str | pl.Expr) -> pl.Expr:
    """The normalised form of a text column (null stays null)."""
    expr = pl.col(column) if isinstance(column, str) else column
    return expr.str.to_lowercase().str.replace_all(NUMBER, "0").str.replace_all(SEPARATORS, " ").str.strip_chars(" ")


def normalize(texts: pl.Series) -> pl.Series:
    """Normalise a series of texts (see the module docstring)."""
    return pl.select(normalize_expr(pl.lit(texts.cast(pl.String)))).to_series().alias(texts.name)


def shingles(text: str | None, ngram: int = 5) -> list[bytes]:
    """The shingles of one raw text, in order (duplicates kept): the reference definition."""
    if text is None:
        return []
    norm = normalize(pl.Series([text])).item()
    if not norm:
        return []
    words = norm.split(" ")
    if len(words) < ngram:
        return [norm.encode("utf-8")]
    return [" ".join(words[i : i + ngram]).encode("utf-8") for i in range(len(words) - ngram + 1)]


def word_counts(norm: pl.Series) -> pl.Series:
    """Number of words in each normalised text (0 for empty or null)."""
    return pl.select(
        pl.when(pl.lit(norm).str.len_bytes() > 0)
        .then(pl.lit(norm).str.count_matches(" ", literal=True) + 1)
        .otherwise(0)
        .fill_null(0)
    ).to_series()


@dataclass(frozen=True)
class ShingleSpans:
    """Shingles of many texts as byte ranges into one UTF-8 buffer, ordered by text."""

    data: np.ndarray  # uint8, the concatenated normalised texts
    starts: np.ndarray  # int64, first byte of each shingle
    lengths: np.ndarray  # int64, byte length of each shingle
    doc: np.ndarray  # int64, index of the text each shingle belongs to (non-decreasing)


def utf8_buffers(norm: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes and int64 offsets of a string series (nulls read as empty)."""
    arrow = norm.fill_null("").to_arrow()
    if isinstance(arrow, pa.ChunkedArray):
        arrow = arrow.combine_chunks()
    arrow = arrow.cast(pa.large_string())
    n = len(arrow)
    _, offsets_buf, data_buf = arrow.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64, count=n + 1, offset=arrow.offset * 8)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return data, offsets


def shingle_spans(norm: pl.Series, ngram: int = 5) -> ShingleSpans:
    """The shingles of each normalised text (as :func:`shingles` defines them) as byte spans."""
    data, offsets = utf8_buffers(norm)
    n = len(offsets) - 1
    doc_start, doc_end = offsets[:-1], offsets[1:]
    base = offsets[0]
    region = data[base : offsets[-1]]
    is_start = np.empty(len(region), dtype=bool)
    if len(region):
        is_start[0] = False
        np.equal(region[:-1], 32, out=is_start[1:])
    nonempty = doc_end > doc_start
    is_start[doc_start[nonempty] - base] = True
    word_start = np.flatnonzero(is_start) + base
    counts = np.searchsorted(word_start, doc_end) - np.searchsorted(word_start, doc_start)
    word_doc = np.repeat(np.arange(n), counts)
    word_end = np.empty_like(word_start)
    word_end[:-1] = word_start[1:] - 1
    word_end[np.cumsum(counts)[nonempty] - 1] = doc_end[nonempty]
    per_doc = np.where(counts >= ngram, counts - ngram + 1, np.minimum(counts, 1))
    doc_offset = np.cumsum(per_doc) - per_doc
    total = int(per_doc.sum())
    starts = np.empty(total, dtype=np.int64)
    ends = np.empty(total, dtype=np.int64)
    docs = np.repeat(np.arange(n, dtype=np.int64), per_doc)
    if len(word_start) >= ngram:
        first = np.arange(len(word_start) - ngram + 1)
        first = first[word_doc[first] == word_doc[first + ngram - 1]]
        d = word_doc[first]
        slot = doc_offset[d] + first - (np.cumsum(counts) - counts)[d]
        starts[slot] = word_start[first]
        ends[slot] = word_end[first + ngram - 1]
    short = np.flatnonzero((counts > 0) & (counts < ngram))
    starts[doc_offset[short]] = doc_start[short]
    ends[doc_offset[short]] = doc_end[short]
    return ShingleSpans(data, starts, ends - starts, docs)
