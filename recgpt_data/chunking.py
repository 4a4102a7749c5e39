"""Token-aware chunking of serialized histories (GPT-NeoX-20B by default, any tokenizer.json).

Each user's whole history (header, blank line, item lines) is tokenized once, and each line's
count is read off where the line-break tokens fall; a chunk's count is then the header's cost plus
its lines' counts plus one per line break. That is exact when the tokenizer's pre-tokenizer splits
at line breaks and writes each as one token (GPT-NeoX's byte-level regex does: every line starts
with a field name and ends without white space); a history where the line-break tokens are not
where they must be has its lines tokenized one by one instead, and ``exact_tokens`` in the stage
re-tokenizes every chunk.

A history over the limit is split into the fewest chunks that fit, with item counts as even as
that allows; an item too long on its own has its review (else description, else title) cut at a
token boundary, and each cut is counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import polars as pl
from tokenizers import Tokenizer

from recgpt_data.serialize import HEADER, parse_item_line, render_fields

MAX_TOKENS = 2048
CUT_ORDER = ("Review", "Description", "Title")
BATCH_CHARS = 1 << 22  # characters tokenized per call, which bounds the encodings held at once
_PROBE = "Title: x"


@dataclass
class TokenCounter:
    """Token counts without special tokens, and the fixed costs of a chunk's header and line breaks."""

    tokenizer: Tokenizer
    _headers: dict[str, int] = field(default_factory=dict)

    def count(self, texts: Sequence[str]) -> np.ndarray:
        """Tokens of each text (no special tokens)."""
        counts = np.zeros(len(texts), dtype=np.int64)
        for start, end in _batches(texts):
            encodings = self.tokenizer.encode_batch_fast(list(texts[start:end]), add_special_tokens=False)
            counts[start:end] = [len(e.ids) for e in encodings]
        return counts

    def line_tokens(self, histories: Sequence[str], headers: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Tokens of each item line of each whole history text, read off one tokenization of the
        history by where its line-break tokens fall (``headers``: each history's header cost,
        ``sizes``: its line count); ``-1`` for the lines of a history where they do not fall as
        the format needs (count those lines alone)."""
        out = np.full(int(sizes.sum()), -1, dtype=np.int64)
        newline = self.newline
        if newline is None:
            return out
        offsets = np.concatenate(([0], np.cumsum(sizes)))
        for start, end in _batches(histories):
            encodings = self.tokenizer.encode_batch_fast(list(histories[start:end]), add_special_tokens=False)
            for index, encoding in enumerate(encodings, start):
                ids = np.asarray(encoding.ids, dtype=np.int64)
                breaks = np.flatnonzero(ids == newline)
                first = headers[index] - 2  # the header's own tokens, then the blank line's two
                if len(breaks) != sizes[index] + 1 or breaks[0] != first or breaks[1] != first + 1:
                    continue
                bounds = np.append(breaks[2:], len(ids))
                out[offsets[index] : offsets[index + 1]] = bounds - breaks[1:] - 1
        return out

    def one(self, text: str) -> int:
        """Tokens of one text."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def header(self, noun: str) -> int:
        """Tokens the header and its blank line add in front of a first item line."""
        if noun not in self._headers:
            self._headers[noun] = self.one(f"{HEADER.format(noun=noun)}\n\n{_PROBE}") - self.one(_PROBE)
        return self._headers[noun]

    @property
    def separator(self) -> int:
        """Tokens one line break between two item lines adds."""
        return _separator_cost(self.tokenizer)

    @property
    def newline(self) -> int | None:
        """The id of the one token a line break before an item line becomes, if it is one token
        and the blank line after the header is two of it."""
        return _newline_id(self.tokenizer)


@lru_cache(maxsize=8)
def _separator_cost(tokenizer: Tokenizer) -> int:
    counter = TokenCounter(tokenizer)
    return counter.one(f"x.\n{_PROBE}") - counter.one("x.") - counter.one(_PROBE)


@lru_cache(maxsize=8)
def _newline_id(tokenizer: Tokenizer) -> int | None:
    alone = tokenizer.encode("\n", add_special_tokens=False).ids
    probe = tokenizer.encode(f"x.\n\n{_PROBE}\n{_PROBE}", add_special_tokens=False).ids
    if len(alone) != 1 or probe.count(alone[0]) != 3:
        return None
    return alone[0]


def _batches(texts: Sequence[str]) -> list[tuple[int, int]]:
    """Consecutive ranges of ``texts`` of about :data:`BATCH_CHARS` characters each."""
    ranges, start, size = [], 0, 0
    for index, text in enumerate(texts):
        if size and size + len(text) > BATCH_CHARS:
            ranges.append((start, index))
            start, size = index, 0
        size += len(text)
    if start < len(texts):
        ranges.append((start, len(texts)))
    return ranges


def chunk_tokens(line_tokens: Sequence[int], header: int, separator: int) -> int:
    """Tokens of a chunk holding lines of ``line_tokens`` tokens."""
    return header + int(sum(line_tokens)) + separator * max(len(line_tokens) - 1, 0)


def plan_chunks(line_tokens: Sequence[int], header: int, separator: int, limit: int) -> list[int]:
    """Item counts of the fewest contiguous chunks whose tokens are each at most ``limit``, as even
    as the fewest allows. Every single line must fit on its own (cut first)."""
    costs = np.asarray(line_tokens, dtype=np.int64) + separator
    budget = limit - header + separator  # each line pays one separator, the chunk's first line none
    n = len(costs)
    if n == 0:
        return []
    if costs.max() > budget:
        raise ValueError("a line longer than the limit on its own must be cut before chunking")
    prefix = np.concatenate(([0], np.cumsum(costs)))
    if prefix[-1] <= budget:
        return [n]
    # furthest[i]: the end of the longest chunk starting at i; fewest[i]: chunks needed for lines i..n.
    furthest = np.searchsorted(prefix, prefix[:-1] + budget, side="right") - 1
    fewest = np.zeros(n + 1, dtype=np.int64)
    for i in range(n - 1, -1, -1):
        fewest[i] = 1 + fewest[furthest[i]]
    sizes = []
    start, left = 0, int(fewest[0])
    while left > 0:
        # the earliest end that leaves lines the remaining chunks can hold (fewest is non-increasing)
        earliest = start + 1 + int(np.searchsorted(-fewest[start + 1 :], -(left - 1), side="left"))
        target = start + math.ceil((n - start) / left)
        end = min(max(target, earliest), int(furthest[start]))
        sizes.append(end - start)
        start, left = end, left - 1
    return sizes


def cut_line(line: str, budget: int, counter: TokenCounter) -> tuple[str, str | None]:
    """``line`` cut to at most ``budget`` tokens by shortening its review (else description, else
    title) at a token boundary; returns the line and the field cut (``None`` if it already fit)."""
    if counter.one(line) <= budget:
        return line, None
    fields = parse_item_line(line)
    for name in CUT_ORDER:
        if name not in fields:
            continue
        offsets = counter.tokenizer.encode(fields[name], add_special_tokens=False).offsets
        ends = [0] + [end for _, end in offsets]
        low, high = 0, len(ends) - 1  # the most tokens of the field that fit, by bisection
        while low < high:
            middle = (low + high + 1) // 2
            if counter.one(_with_prefix(fields, name, ends[middle])) <= budget:
                low = middle
            else:
                high = middle - 1
        candidate = _with_prefix(fields, name, ends[low])
        if counter.one(candidate) <= budget:
            return candidate, name
        fields = parse_item_line(candidate) if candidate else {}
    raise ValueError(f"an item line cannot be cut to {budget} tokens: {line[:80]!r}")


def _with_prefix(fields: dict[str, str], name: str, end: int) -> str:
    """The line of ``fields`` with field ``name`` cut to its first ``end`` characters (left out if empty)."""
    cut = dict(fields)
    kept = cut[name][:end].rstrip()
    if kept:
        cut[name] = kept
    else:
        del cut[name]
    return render_fields(cut)


DOCUMENT_SCHEMA: dict[str, pl.DataType] = {
    "text": pl.String(),
    "num_tokens": pl.Int64(),
    "source": pl.String(),
    "dataset": pl.String(),
    "user_id": pl.String(),
    "chunk_index": pl.Int64(),
    "num_items": pl.Int64(),
    "item_ids": pl.List(pl.String()),
}


@dataclass
class Chunked:
    """Documents made from histories, how many lines had a field cut (by field), and how many
    lines were dropped for rendering empty (an item with none of the template's fields)."""

    documents: pl.DataFrame
    cut: dict[str, int]
    empty_lines: int


def chunk_histories(lines: pl.DataFrame, counter: TokenCounter, max_tokens: int = MAX_TOKENS) -> Chunked:
    """Documents from item lines in history order (columns source, dataset, user_id, item_id, noun,
    line): each user's lines under the header, split into the fewest chunks so that
    ``num_tokens + 1`` (EOS) is at most ``max_tokens``."""
    limit = max_tokens - 1
    empty_lines = lines.height
    lines = lines.filter(pl.col("line").str.len_bytes() > 0)
    empty_lines -= lines.height
    if lines.is_empty():
        return Chunked(pl.DataFrame(schema=DOCUMENT_SCHEMA), {}, empty_lines)
    separator = counter.separator
    header_of = {noun: counter.header(noun) for noun in lines["noun"].unique().to_list()}
    headers = lines["noun"].replace_strict(header_of, return_dtype=pl.Int64).to_numpy()
    user = lines.select(pl.struct("dataset", "user_id").rle_id()).to_series().to_numpy()
    starts = np.flatnonzero(np.concatenate(([True], user[1:] != user[:-1])))
    ends = np.append(starts[1:], len(user))
    histories = (
        lines.group_by(pl.Series("__user", user), maintain_order=True)
        .agg(pl.col("noun").first(), pl.col("line").str.join("\n"))
        .select(_header_expr() + pl.col("line"))
        .to_series()
        .to_list()
    )
    tokens = counter.line_tokens(histories, headers[starts], ends - starts)
    del histories
    alone = np.flatnonzero(tokens < 0)
    if len(alone):
        tokens[alone] = counter.count(lines["line"].gather(alone).to_list())
    cut: dict[str, int] = {}
    texts = None
    for row in np.flatnonzero(headers + tokens > limit):
        texts = texts if texts is not None else lines["line"].to_list()
        texts[row], name = cut_line(texts[row], limit - int(headers[row]), counter)
        tokens[row] = counter.one(texts[row])
        cut[name] = cut.get(name, 0) + 1
    if texts is not None:
        lines = lines.with_columns(pl.Series("line", texts))
    sums = np.add.reduceat(tokens, starts)
    totals = headers[starts] + sums + separator * (ends - starts - 1)
    chunk = np.zeros(len(user), dtype=np.int64)
    for start, end in zip(starts[totals > limit], ends[totals > limit], strict=True):
        sizes = plan_chunks(tokens[start:end], int(headers[start]), separator, limit)
        chunk[start:end] = np.repeat(np.arange(len(sizes)), sizes)
    documents = (
        lines.with_columns(pl.Series("chunk_index", chunk), pl.Series("__tokens", tokens))
        .group_by(["dataset", "user_id", "chunk_index"], maintain_order=True)
        .agg(
            pl.col("source").first(),
            pl.col("noun").first(),
            pl.col("line").str.join("\n").alias("__body"),
            pl.col("__tokens").sum(),
            pl.len().cast(pl.Int64).alias("num_items"),
            pl.col("item_id").alias("item_ids"),
        )
    )
    documents = documents.with_columns(
        (_header_expr() + pl.col("__body")).alias("text"),
        (
            pl.col("noun").replace_strict(header_of, return_dtype=pl.Int64)
            + pl.col("__tokens")
            + separator * (pl.col("num_items") - 1)
        ).alias("num_tokens"),
    )
    return Chunked(
        documents.select(list(DOCUMENT_SCHEMA)).cast(DOCUMENT_SCHEMA), dict(sorted(cut.items())), empty_lines
    )


def _header_expr() -> pl.Expr:
    """The header for the ``noun`` column, with its blank line."""
    before, after = HEADER.split("{noun}")
    return pl.lit(before) + pl.col("noun") + pl.lit(after + "\n\n")
