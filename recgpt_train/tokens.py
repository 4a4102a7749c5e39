"""The pre-training token stream: every document's ids followed by EOS, one split as one virtual array.

A built folder carries it as token shards (``exports/tokens/``, written by the ``pretrain_tokens``
stage, whose module :mod:`recgpt_data.pretrain_tokens` owns their layout): flat ``.bin`` arrays of ids
and ``.idx`` arrays of document end offsets, memory-mapped here, so start-up costs the same at any
corpus size and a process touches only the pages of the rows it reads. A source without shards (a Hub
id, a ``datasets.Dataset``, an older folder) is tokenised into the same arrays in memory.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
from transformers import PreTrainedTokenizerFast

from recgpt_data.pretrain_tokens import (
    INDEX_DTYPE,
    TOKENS_MANIFEST,
    document_arrays,
    read_tokens_manifest,
    token_dtype,
)

BATCH = 4096


class TokenStream:
    """Documents' ids (each followed by EOS) over one or more shards, read as one array."""

    def __init__(self, tokens: list[np.ndarray], ends: list[np.ndarray]) -> None:
        self.tokens = tokens
        self.ends = ends
        self.starts = np.concatenate([[0], np.cumsum([len(t) for t in tokens])]).astype(np.int64)
        self.first_doc = np.concatenate([[0], np.cumsum([len(e) for e in ends])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def documents(self) -> int:
        return int(self.first_doc[-1])

    def read(self, start: int, stop: int, with_docs: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Ids of positions ``[start, stop)`` (int64) and, with ``with_docs``, each position's document number."""
        ids, docs = [], []
        shard = int(np.searchsorted(self.starts, start, side="right")) - 1
        while start < stop:
            lo, hi = start - self.starts[shard], min(stop, self.starts[shard + 1]) - self.starts[shard]
            ids.append(np.asarray(self.tokens[shard][lo:hi], dtype=np.int64))
            if with_docs:
                local = np.searchsorted(self.ends[shard], np.arange(lo, hi), side="right")
                docs.append(self.first_doc[shard] + local)
            start, shard = int(self.starts[shard] + hi), shard + 1
        return np.concatenate(ids), (np.concatenate(docs) if with_docs else None)

    def documents_ending_before(self, position: int) -> int:
        """How many documents end (EOS included) at or before ``position``."""
        shard = int(np.searchsorted(self.starts, position, side="right")) - 1
        if shard >= len(self.ends):
            return self.documents
        return int(
            self.first_doc[shard] + np.searchsorted(self.ends[shard], position - self.starts[shard], side="right")
        )

    def boundaries_before(self, position: int, every: int) -> int:
        """Document ends before ``position`` that do not fall on a multiple of ``every``."""
        inside = 0
        for shard, ends in enumerate(self.ends):
            for at in range(0, len(ends), 1 << 20):
                global_ends = np.asarray(ends[at : at + (1 << 20)]) + self.starts[shard]
                inside += int(((global_ends < position) & (global_ends % every != 0)).sum())
        return inside


def _mapped(path: Path, dtype: str, count: int) -> np.ndarray:
    """``count`` values of ``dtype`` memory-mapped from ``path`` (an empty array for an empty file)."""
    expected = count * np.dtype(dtype).itemsize
    if path.stat().st_size != expected:
        raise ValueError(f"{path}: {path.stat().st_size} bytes, the token manifest says {expected}")
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,)) if count else np.empty(0, dtype=dtype)


def token_splits(folder: str | Path) -> set[str] | None:
    """The splits a built folder has token shards for; ``None`` where it has none."""
    manifest = read_tokens_manifest(Path(folder))
    return set(manifest["splits"]) if manifest is not None else None


def open_token_stream(folder: str | Path, split: str) -> TokenStream | None:
    """The memory-mapped token shards of ``split`` in a built folder; ``None`` where it has none."""
    folder = Path(folder)
    manifest = read_tokens_manifest(folder)
    if manifest is None:
        return None
    if split not in manifest["splits"]:
        raise ValueError(f"{folder / TOKENS_MANIFEST}: no {split!r} split; found {sorted(manifest['splits'])}")
    shards = manifest["splits"][split]
    tokens = [_mapped(folder / s["tokens"], manifest["dtype"], s["token_count"]) for s in shards]
    ends = [_mapped(folder / s["index"], manifest["index_dtype"], s["documents"]) for s in shards]
    return TokenStream(tokens, ends)


def tokenize_stream(ds: datasets.Dataset, tokenizer: PreTrainedTokenizerFast) -> TokenStream:
    """Every ``text`` of ``ds`` tokenised (no special tokens) and followed by EOS, in memory, laid out
    as one token shard."""
    dtype = token_dtype(tokenizer.backend_tokenizer)
    ids, ends = [np.empty(0, dtype=dtype)], [np.empty(0, dtype=INDEX_DTYPE)]
    texts = ds.select_columns(["text"])
    written = 0
    for start in range(0, len(ds), BATCH):
        encoded = tokenizer(texts[start : start + BATCH]["text"], add_special_tokens=False)["input_ids"]
        batch_ids, batch_ends = document_arrays(encoded, tokenizer.eos_token_id, dtype, written)
        ids.append(batch_ids)
        ends.append(batch_ends)
        written += len(batch_ids)
    return TokenStream([np.concatenate(ids)], [np.concatenate(ends)])
