"""A plain reading of a built folder's token shards (``exports/tokens/``): the parquet shards
``write_pretrain`` listed, tokenised with the tokenizers library, against the raw little-endian
bytes of the ``.bin`` and ``.idx`` files and the manifest's counts and hashes."""

from __future__ import annotations

import hashlib
import json
from array import array
from itertools import accumulate
from pathlib import Path

import pyarrow.parquet as pq
from tokenizers import Tokenizer


def assert_token_shards(out: Path, tokenizer_file: Path) -> None:
    """Every pre-training shard of ``out`` has token files in the corpus' order: ``<shard>.bin``
    holds each document's ids, in order, as ``tokenizer_file`` encodes it, then EOS (id 0, as
    uint16), and ``<shard>.idx`` where each document ends; the manifest's counts and sha256 match."""
    tok = Tokenizer.from_file(str(tokenizer_file))
    eos = tok.token_to_id("<|endoftext|>")
    corpus = json.loads((out / "manifest.json").read_text())["pretrain"]["splits"]
    tokens = json.loads((out / "exports" / "tokens" / "manifest.json").read_text())
    assert tokens["dtype"] == "<u2" and eos == 0
    parquet = sorted((out / "data" / "pretrain").glob("*.parquet"))
    assert parquet
    listed = []
    for split in ("train", "validation"):
        assert [s["source"] for s in tokens["splits"][split]] == [s["path"] for s in corpus[split]["shards"]]
        for shard in tokens["splits"][split]:
            stem = Path(shard["source"]).stem
            assert (shard["tokens"], shard["index"]) == (f"exports/tokens/{stem}.bin", f"exports/tokens/{stem}.idx")
            texts = pq.read_table(out / shard["source"], columns=["text"])["text"].to_pylist()
            encoded = [tok.encode(text, add_special_tokens=False).ids for text in texts]
            expected = [t for ids in encoded for t in (*ids, eos)]
            ids, ends = array("H"), array("q")
            ids.frombytes((out / shard["tokens"]).read_bytes())
            ends.frombytes((out / shard["index"]).read_bytes())
            assert ids.tolist() == expected
            assert len(ends) == len(texts) and (not texts or ends[-1] == len(expected))
            assert ends.tolist() == list(accumulate(len(e) + 1 for e in encoded))
            assert (shard["documents"], shard["token_count"]) == (len(texts), len(expected))
            for kind in ("tokens", "index"):
                assert shard[f"{kind}_sha256"] == hashlib.sha256((out / shard[kind]).read_bytes()).hexdigest()
            listed.append(shard["source"])
    assert sorted(listed) == [path.relative_to(out).as_posix() for path in parquet]
