"""Stage ``pretrain_tokens``: the written pre-training shards as flat token arrays that a trainer
memory-maps, as Megatron's ``.bin``/``.idx`` and nanoGPT's ``train.bin`` lay them out.

For each ``data/pretrain/<split>-*.parquet`` shard that ``write_pretrain`` listed in ``manifest.json``
(in its order, which is the corpus' shuffled order), ``exports/tokens/<same name>.bin`` holds the token
ids of every document followed by EOS (uint16 where the vocabulary fits, else uint32, little-endian)
and ``.idx`` the end offset of each document in that array (int64). ``exports/tokens/manifest.json``
names the files with their dtype, counts and sha256, and the parquet shard each one was read from.

It reads the published shards rather than a table, so it runs on the whole folder (it summarises
the run so far; user buckets do not fit a shuffled order that spans every bucket); the tokenizer's
batch encoder spreads each batch over the machine's cores.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from pydantic import Field
from tokenizers import Tokenizer

from recgpt_data.corpus import SPLITS, tokenizer_path
from recgpt_data.errors import UsageError
from recgpt_data.io.parquet import write_text
from recgpt_data.pipeline.fingerprint import file_sha256
from recgpt_data.stage import Context, Frame, Params, StageOutput, StageStats, stage
from recgpt_data.tokenizer import load_tokenizer, tokenizer_sha256

TOKENS_DIR = Path("exports") / "tokens"
EOS_TOKEN = "<|endoftext|>"


@dataclass
class TokenShard:
    """One written token shard: its files relative to the output folder, sizes and provenance."""

    tokens: str
    index: str
    source: str
    source_sha256: str
    documents: int
    token_count: int
    num_tokens_mismatch: int
    tokens_sha256: str
    index_sha256: str


def token_dtype(tokenizer: Tokenizer) -> np.dtype:
    """uint16 where every id fits (GPT-NeoX-20B: 50,277), else uint32."""
    return np.dtype("<u2") if tokenizer.get_vocab_size(with_added_tokens=True) <= 2**16 else np.dtype("<u4")


def tokenize_shard(
    parquet: Path, tokens_path: Path, index_path: Path, tokenizer: Tokenizer, eos_id: int, batch_rows: int
) -> tuple[int, int, int]:
    """Append each document's ids and EOS to ``tokens_path`` and its end offset to ``index_path``,
    ``batch_rows`` documents at a time; returns (documents, tokens, documents whose ``num_tokens``
    differs from the ids written, EOS not counted)."""
    dtype = token_dtype(tokenizer)
    documents = written = mismatched = 0
    with open(tokens_path, "wb") as tokens_out, open(index_path, "wb") as index_out:
        for batch in pq.ParquetFile(parquet).iter_batches(batch_size=batch_rows, columns=["text", "num_tokens"]):
            encoded = tokenizer.encode_batch(batch.column("text").to_pylist(), add_special_tokens=False)
            lengths = np.fromiter((len(e.ids) for e in encoded), dtype=np.int64, count=len(encoded))
            ids = np.fromiter(
                (t for e in encoded for t in (*e.ids, eos_id)), dtype=dtype, count=int(lengths.sum()) + len(encoded)
            )
            ids.tofile(tokens_out)
            (written + np.cumsum(lengths + 1)).astype("<i8").tofile(index_out)
            mismatched += int((lengths != batch.column("num_tokens").to_numpy()).sum())
            documents += len(encoded)
            written += len(ids)
    return documents, written, mismatched


class TokensParams(Params):
    tokenizer: str | None = None  # the one write_pretrain's manifest names; default: bundled GPT-NeoX-20B
    batch_rows: int = Field(8192, ge=1)  # documents encoded at a time


@stage("pretrain_tokens", params=TokensParams, summarises=True, version="1")
def pretrain_tokens_stage(tables: Mapping[str, Frame], params: TokensParams, ctx: Context) -> StageOutput:
    """Token ids of every pre-training shard, in the corpus' order, for memory-mapped training."""
    folder = ctx.folder or ctx.out_dir
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise UsageError(f"pretrain_tokens: no manifest.json in {folder}; put it after write_pretrain")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    path = tokenizer_path(params.tokenizer, ctx)
    sha = tokenizer_sha256(path)
    if sha != manifest["tokenizer"]["sha256"]:
        raise UsageError("pretrain_tokens: its tokenizer is not the one write_pretrain recorded in manifest.json")
    tokenizer = load_tokenizer(path)
    eos_id = tokenizer.token_to_id(EOS_TOKEN)
    if eos_id is None:
        raise UsageError(f"pretrain_tokens: the tokenizer has no {EOS_TOKEN} token")
    stats = StageStats()
    splits: dict[str, list[dict]] = {}
    for split in SPLITS:
        shards = []
        for record in manifest["pretrain"]["splits"][split]["shards"]:
            stem = Path(record["path"]).stem
            tokens_rel, index_rel = TOKENS_DIR / f"{stem}.bin", TOKENS_DIR / f"{stem}.idx"
            (ctx.out_dir / TOKENS_DIR).mkdir(parents=True, exist_ok=True)
            tmp_tokens, tmp_index = (ctx.out_dir / f"{p}.tmp" for p in (tokens_rel, index_rel))
            counts = tokenize_shard(folder / record["path"], tmp_tokens, tmp_index, tokenizer, eos_id, params.batch_rows)
            tmp_tokens.replace(ctx.out_dir / tokens_rel)
            tmp_index.replace(ctx.out_dir / index_rel)
            shards.append(
                asdict(
                    TokenShard(
                        tokens_rel.as_posix(), index_rel.as_posix(), record["path"], record["sha256"], *counts,
                        file_sha256(ctx.out_dir / tokens_rel), file_sha256(ctx.out_dir / index_rel),
                    )
                )
            )
        splits[split] = shards
        stats.rows_out[f"{split}_documents"] = sum(s["documents"] for s in shards)
        stats.info[f"{split}_tokens"] = sum(s["token_count"] for s in shards)
        mismatched = sum(s["num_tokens_mismatch"] for s in shards)
        if mismatched:
            stats.info[f"{split}_num_tokens_mismatch"] = mismatched
    out = {
        "dtype": token_dtype(tokenizer).str,
        "index_dtype": "<i8",
        "eos_id": eos_id,
        "eos_appended": True,
        "tokenizer": {"name": manifest["tokenizer"]["name"], "sha256": sha},
        "splits": splits,
    }
    write_text(json.dumps(out, indent=2) + "\n", ctx.out_dir / TOKENS_DIR / "manifest.json")
    stats.info["note"] = f"{stats.info.get('train_tokens', 0):,} train tokens memory-mappable in {TOKENS_DIR}"
    return StageOutput({}, stats)
