"""What an optimizer step trains on: a numbered set of examples, and the rows a step packs them into.

- :class:`StreamBlocks` (pre-training, as llm-foundry's ``ConcatTokensDataset`` for MPT-7B): example
  ``r`` is the ``r``-th ``seq_len`` block of the token stream; only the final partial block is dropped.
  With ``doc_masking`` each document gets its own sequence id, so attention and prediction stop at
  document ends. A block is one row.
- :class:`InstructionExamples` (instruction tuning, as llm-foundry's ``finetuning`` loader): example
  ``i`` is one ``prompt + response + EOS`` pair, prompt and response tokenised apart and joined with
  no separator. A step's examples are packed whole into rows, best-fit-decreasing.

``bins(indices)`` says which examples share a row; ``rows(bins)`` reads just those rows, so each
data-parallel rank materialises only its own.
"""

from __future__ import annotations

import numpy as np

from recgpt_train.packing import (
    IGNORE,
    PackingStats,
    best_fit_decreasing,
    filter_pairs,
    next_token_labels,
    pack_pairs,
)
from recgpt_train.tokens import TokenStream

Rows = tuple[np.ndarray, np.ndarray, np.ndarray]  # input_ids, labels, seq_ids: (rows, seq_len) int64


class StreamBlocks:
    """Pre-training examples: consecutive ``seq_len`` blocks of a token stream."""

    def __init__(self, stream: TokenStream, seq_len: int, doc_masking: bool = False) -> None:
        self.stream, self.seq_len, self.doc_masking = stream, seq_len, doc_masking
        self.count = len(stream) // seq_len

    def __len__(self) -> int:
        return self.count

    def bins(self, indices: np.ndarray) -> list[list[int]]:
        return [[int(i)] for i in indices]

    def rows(self, bins: list[list[int]]) -> Rows:
        ids = np.empty((len(bins), self.seq_len), dtype=np.int64)
        seq = np.zeros((len(bins), self.seq_len), dtype=np.int64)
        for row, (block,) in enumerate(bins):
            start = block * self.seq_len
            ids[row], docs = self.stream.read(start, start + self.seq_len, with_docs=self.doc_masking)
            if docs is not None:
                seq[row] = docs - docs[0]
        return ids, next_token_labels(ids, seq, np.ones_like(ids, dtype=bool)), seq

    def stats(self) -> PackingStats:
        """What cutting the stream into blocks keeps and drops (computed from document ends, no tokens read)."""
        used = self.count * self.seq_len
        cut = self.stream.boundaries_before(used, self.seq_len) if self.doc_masking else 0
        return PackingStats(
            examples=self.stream.documents,
            packed=self.stream.documents_ending_before(used),
            rows=self.count,
            seq_len=self.seq_len,
            tokens=used,
            loss_tokens=self.count * (self.seq_len - 1) - cut,
            dropped={"final_partial_block": 1} if len(self.stream) > used else {},
            dropped_tokens=len(self.stream) - used,
        )


class InstructionExamples:
    """Instruction examples that fit a row; each step packs its own examples into rows."""

    def __init__(self, pairs: list[tuple[list[int], list[int]]], seq_len: int, eos_id: int) -> None:
        self.pairs, self.dropped, self.dropped_tokens = filter_pairs(pairs, seq_len)
        self.total, self.seq_len, self.eos_id = len(pairs), seq_len, eos_id
        self.lengths = [len(p) + len(r) + 1 for p, r in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def bins(self, indices: np.ndarray) -> list[list[int]]:
        chosen = [int(i) for i in indices]
        return [[chosen[j] for j in b] for b in best_fit_decreasing([self.lengths[i] for i in chosen], self.seq_len)]

    def rows(self, bins: list[list[int]]) -> Rows:
        return pack_pairs(self.pairs, bins, self.seq_len, self.eos_id)

    def stats(self, steps: list[np.ndarray] | None = None) -> PackingStats:
        """Packing of the examples as ``steps`` group them (default: all in one pack)."""
        groups = steps if steps is not None else [np.arange(len(self))]
        used = [int(i) for g in groups for i in g]
        rows = sum(len(self.bins(g)) for g in groups)
        return PackingStats(
            examples=self.total,
            packed=len(self.pairs),
            rows=rows,
            seq_len=self.seq_len,
            tokens=sum(self.lengths[i] for i in used),
            loss_tokens=sum(len(self.pairs[i][1]) + 1 - (not self.pairs[i][0]) for i in used),
            dropped=self.dropped,
            dropped_tokens=self.dropped_tokens,
        )


def padding_row(seq_len: int, pad_id: int) -> Rows:
    """One row with no example: a rank short of rows runs it so every rank runs as many micro-steps."""
    return (
        np.full((1, seq_len), pad_id, dtype=np.int64),
        np.full((1, seq_len), IGNORE, dtype=np.int64),
        np.full((1, seq_len), -1, dtype=np.int64),
    )
