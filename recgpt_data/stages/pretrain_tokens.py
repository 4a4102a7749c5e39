"""Stage ``pretrain_tokens``: the written pre-training shards as memory-mappable token arrays
(:mod:`recgpt_data.pretrain_tokens`)."""

from __future__ import annotations

import json
from collections.abc import Mapping

import polars as pl
from pydantic import Field

from recgpt_data.errors import UsageError
from recgpt_data.io.parquet import write_text
from recgpt_data.pretrain_tokens import EOS_TOKEN, TOKENS_DIR, TOKENS_MANIFEST, tokenize_splits, tokens_manifest
from recgpt_data.stage import Context, Params, StageOutput, StageStats, stage
from recgpt_data.tokenizer import load_tokenizer, tokenizer_sha256


class TokensParams(Params):
    """How many documents are encoded at a time."""

    batch_rows: int = Field(8192, ge=1)  # documents encoded at a time


@stage("pretrain_tokens", params=TokensParams, summarises=True, settings=("tokenizer",), version="1")
def pretrain_tokens_stage(tables: Mapping[str, pl.LazyFrame], params: TokensParams, ctx: Context) -> StageOutput:
    """Token ids of every pre-training shard, in the corpus' order, for memory-mapped training, under
    the spec's tokenizer, which must be the one ``manifest.json`` records."""
    folder = ctx.folder or ctx.out_dir
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise UsageError(f"pretrain_tokens: no manifest.json in {folder}; put it after write_pretrain")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    sha = tokenizer_sha256(ctx.tokenizer)
    if sha != manifest["tokenizer"]["sha256"]:
        raise UsageError("pretrain_tokens: its tokenizer is not the one write_pretrain recorded in manifest.json")
    tokenizer = load_tokenizer(ctx.tokenizer)
    eos_id = tokenizer.token_to_id(EOS_TOKEN)
    if eos_id is None:
        raise UsageError(f"pretrain_tokens: the tokenizer has no {EOS_TOKEN} token")
    splits = tokenize_splits(manifest, folder, ctx.out_dir, tokenizer, eos_id, params.batch_rows)
    stats = StageStats()
    for split, shards in splits.items():
        stats.rows_out[f"{split}_documents"] = sum(s["documents"] for s in shards)
        stats.info[f"{split}_tokens"] = sum(s["token_count"] for s in shards)
        mismatched = sum(s["num_tokens_mismatch"] for s in shards)
        if mismatched:
            stats.info[f"{split}_num_tokens_mismatch"] = mismatched
    out = tokens_manifest(splits, tokenizer, eos_id, manifest["tokenizer"]["name"], sha)
    write_text(json.dumps(out, indent=2) + "\n", ctx.out_dir / TOKENS_MANIFEST)
    stats.info["note"] = f"{stats.info.get('train_tokens', 0):,} train tokens memory-mappable in {TOKENS_DIR}"
    return StageOutput({}, stats)
