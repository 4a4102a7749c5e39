"""Packing token sequences into fixed-length rows with a sequence id per example and next-token labels.

Rows (int32 arrays) carry ``input_ids``, ``labels`` (the target predicted at each position, -100 = no loss; already
shifted, so the model's own shift is not used) and ``seq_ids`` (one id per example, -1 for padding), which
:mod:`recgpt_train.attention` turns into a block-diagonal causal mask. A label is never the first token of
another example, so no example is predicted from the one before it.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

IGNORE = -100


@dataclass
class PackingStats:
    """What packing kept, dropped (by reason) and wasted."""

    examples: int
    packed: int
    rows: int
    seq_len: int
    tokens: int
    loss_tokens: int
    dropped: dict[str, int] = field(default_factory=dict)
    dropped_tokens: int = 0

    @property
    def efficiency(self) -> float:
        """Non-pad tokens / all row tokens."""
        return self.tokens / (self.rows * self.seq_len) if self.rows else 0.0

    def as_dict(self) -> dict:
        """A JSON-ready record, efficiency included."""
        return {**self.__dict__, "efficiency": round(self.efficiency, 6)}


@dataclass
class PackedRows:
    """Equal-length rows ready for the model."""

    input_ids: np.ndarray
    labels: np.ndarray
    seq_ids: np.ndarray
    stats: PackingStats

    def __len__(self) -> int:
        return len(self.input_ids)


def _next_token_labels(ids: np.ndarray, seq: np.ndarray, target: np.ndarray) -> np.ndarray:
    """labels[t] = ids[t+1] where t+1 is a target in the same example, else IGNORE."""
    labels = np.full(ids.shape, IGNORE, dtype=np.int32)
    keep = (seq[..., 1:] == seq[..., :-1]) & target[..., 1:] & (seq[..., 1:] >= 0)
    labels[..., :-1] = np.where(keep, ids[..., 1:], IGNORE)
    return labels


def pack_documents(docs: list[list[int]], seq_len: int, eos_id: int, doc_masking: bool = False) -> PackedRows:
    """Pre-training: concatenate documents, each followed by EOS, and cut into ``seq_len`` blocks.

    As llm-foundry does for MPT-7B, only the final partial block is dropped. With ``doc_masking`` each
    document gets its own sequence id, so attention and prediction stop at document boundaries.
    """
    lengths = np.fromiter((len(d) + 1 for d in docs), dtype=np.int64, count=len(docs))
    total = int(lengths.sum())
    stream = np.full(total, eos_id, dtype=np.int32)
    ends = np.cumsum(lengths)
    for doc, end in zip(docs, ends, strict=True):
        stream[end - 1 - len(doc) : end - 1] = doc
    doc_index = np.repeat(np.arange(len(docs), dtype=np.int32), lengths) if doc_masking else np.zeros(total, np.int32)
    rows = total // seq_len
    used = rows * seq_len
    ids = stream[:used].reshape(rows, seq_len)
    seq = doc_index[:used].reshape(rows, seq_len)
    labels = _next_token_labels(ids, seq, np.ones_like(ids, dtype=bool))
    stats = PackingStats(
        examples=len(docs),
        packed=len(docs) if total == used else int(np.searchsorted(ends, used, side="right")),
        rows=rows,
        seq_len=seq_len,
        tokens=used,
        loss_tokens=int((labels != IGNORE).sum()),
        dropped={"final_partial_block": 1} if total > used else {},
        dropped_tokens=total - used,
    )
    return PackedRows(ids, labels, seq, stats)


def best_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Bins of example indices: longest first, each into the fullest bin it still fits, else a new bin."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    free: list[tuple[int, int]] = []
    bins: list[list[int]] = []
    for i in order:
        pos = bisect.bisect_left(free, (lengths[i], -1))
        if pos == len(free):
            bins.append([i])
            room, b = capacity - lengths[i], len(bins) - 1
        else:
            room, b = free.pop(pos)
            bins[b].append(i)
            room -= lengths[i]
        bisect.insort(free, (room, b))
    return bins


def pack_instructions(
    pairs: list[tuple[list[int], list[int]]], seq_len: int, eos_id: int, pad_id: int | None = None
) -> PackedRows:
    """Instruction tuning: whole ``prompt + response + EOS`` examples, best-fit-decreasing into rows.

    Loss falls on response tokens and EOS only. An example longer than ``seq_len`` or with an empty
    response is dropped and counted by reason; no example is ever cut.
    """
    pad_id = eos_id if pad_id is None else pad_id
    dropped: Counter[str] = Counter()
    kept: list[tuple[list[int], list[int]]] = []
    dropped_tokens = 0
    for prompt, response in pairs:
        size = len(prompt) + len(response) + 1
        reason = "empty_response" if not response else "too_long" if size > seq_len else None
        if reason:
            dropped[reason] += 1
            dropped_tokens += size
        else:
            kept.append((prompt, response))
    bins = best_fit_decreasing([len(p) + len(r) + 1 for p, r in kept], seq_len)
    ids = np.full((len(bins), seq_len), pad_id, dtype=np.int32)
    seq = np.full((len(bins), seq_len), -1, dtype=np.int32)
    target = np.zeros((len(bins), seq_len), dtype=bool)
    for row, members in enumerate(bins):
        at = 0
        for sid, i in enumerate(members):
            prompt, response = kept[i]
            tokens = [*prompt, *response, eos_id]
            ids[row, at : at + len(tokens)] = tokens
            seq[row, at : at + len(tokens)] = sid
            target[row, at + len(prompt) : at + len(tokens)] = True
            at += len(tokens)
    labels = _next_token_labels(ids, seq, target)
    stats = PackingStats(
        examples=len(pairs),
        packed=len(kept),
        rows=len(bins),
        seq_len=seq_len,
        tokens=int((seq >= 0).sum()),
        loss_tokens=int((labels != IGNORE).sum()),
        dropped=dict(sorted(dropped.items())),
        dropped_tokens=dropped_tokens,
    )
    return PackedRows(ids, labels, seq, stats)
