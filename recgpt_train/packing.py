"""Packing token sequences into fixed-length rows with a sequence id per example and next-token labels.

Rows (int64 arrays) carry ``input_ids``, ``labels`` (the target predicted at each position, -100 = no loss; already
shifted, so the model's own shift is not used) and ``seq_ids`` (one id per example, -1 for padding), which
:mod:`recgpt_train.attention` turns into a block-diagonal causal mask. A label is never the first token of
another example, so no example is predicted from the one before it. Pre-training rows are cut from
the token stream (:mod:`recgpt_train.examples`); instruction rows are packed here, best-fit-decreasing.
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


def next_token_labels(ids: np.ndarray, seq: np.ndarray, target: np.ndarray) -> np.ndarray:
    """labels[t] = ids[t+1] where t+1 is a target in the same example, else IGNORE."""
    labels = np.full(ids.shape, IGNORE, dtype=np.int64)
    keep = (seq[..., 1:] == seq[..., :-1]) & target[..., 1:] & (seq[..., 1:] >= 0)
    labels[..., :-1] = np.where(keep, ids[..., 1:], IGNORE)
    return labels


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


def filter_pairs(
    pairs: list[tuple[list[int], list[int]]], seq_len: int
) -> tuple[list[tuple[list[int], list[int]]], dict[str, int], int]:
    """The pairs whose ``prompt + response + EOS`` fits a row and whose response is not empty; the
    others counted by reason (``too_long``, ``empty_response``), with their tokens."""
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
    return kept, dict(sorted(dropped.items())), dropped_tokens


def pack_pairs(
    pairs: list[tuple[list[int], list[int]]], bins: list[list[int]], seq_len: int, eos_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input_ids, labels, seq_ids) of rows, each holding whole ``prompt + response + EOS`` examples of
    ``pairs`` as ``bins`` lists them; loss falls on response tokens and EOS only, EOS pads."""
    ids = np.full((len(bins), seq_len), eos_id, dtype=np.int64)
    seq = np.full((len(bins), seq_len), -1, dtype=np.int64)
    target = np.zeros((len(bins), seq_len), dtype=bool)
    for row, members in enumerate(bins):
        at = 0
        for sid, i in enumerate(members):
            prompt, response = pairs[i]
            tokens = [*prompt, *response, eos_id]
            ids[row, at : at + len(tokens)] = tokens
            seq[row, at : at + len(tokens)] = sid
            target[row, at + len(prompt) : at + len(tokens)] = True
            at += len(tokens)
    return ids, next_token_labels(ids, seq, target), seq
