"""Stage ``pretrain_tokens``: the written pre-training shards as memory-mappable token arrays
(:mod:`recgpt_data.pretrain_tokens`). Its prepare step tokenizes each shard in its own task on the
run's engine (on any node: with the output in object storage a task reads the published shard and
stages its token files in the store); the stage function writes ``exports/tokens/manifest.json``
from their records."""

from __future__ import annotations

import json
from collections.abc import Mapping

import polars as pl
from pydantic import Field

from recgpt_data.errors import UsageError
from recgpt_data.io.parquet import write_scratch, write_text
from recgpt_data.pretrain_tokens import (
    EOS_TOKEN,
    RECORD_SCHEMA,
    TOKENS_DIR,
    TOKENS_MANIFEST,
    shard_jobs,
    token_splits,
    tokenize_job,
    tokens_manifest,
)
from recgpt_data.stage import Context, Params, Preparation, Prepared, StageOutput, StageStats, stage
from recgpt_data.tokenizer import load_tokenizer, tokenizer_sha256

SHARDS = "token_shards"  # the prepare step's records for the stage function: one row per shard


class TokensParams(Params):
    """How much text is encoded at a time: the encodings held at once take some 75 MB per MiB."""

    batch_bytes: int = Field(4 << 20, ge=1)  # bytes of text encoded at a time


def prepare_tokens(prep: Preparation, params: TokensParams, ctx: Context) -> Prepared:
    """Tokenize every shard ``manifest.json`` lists, one task each, under the spec's tokenizer, which
    must be the one ``manifest.json`` records; their records are the table :data:`SHARDS`."""
    folder = ctx.folder or ctx.out_dir
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise UsageError(f"pretrain_tokens: no manifest.json in {folder}; put it after write_pretrain")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if tokenizer_sha256(ctx.tokenizer) != manifest["tokenizer"]["sha256"]:
        raise UsageError("pretrain_tokens: its tokenizer is not the one write_pretrain recorded in manifest.json")
    if load_tokenizer(ctx.tokenizer).token_to_id(EOS_TOKEN) is None:
        raise UsageError(f"pretrain_tokens: the tokenizer has no {EOS_TOKEN} token")
    tasks = prep.task_folders(ctx)  # the store's published shards and staging prefix where it is lent them
    jobs = shard_jobs(manifest, tasks.folder, tasks.out_dir, ctx.tokenizer, params.batch_bytes)
    records = pl.DataFrame(list(prep.map(tokenize_job, jobs)), schema=RECORD_SCHEMA)
    path = prep.scratch / f"{SHARDS}.parquet"
    write_scratch(records, path)
    return Prepared({SHARDS: (str(path),)})


@stage(
    "pretrain_tokens",
    params=TokensParams,
    summarises=True,
    settings=("tokenizer",),
    version="1",
    prepare=prepare_tokens,
    prepare_anywhere=True,
)
def pretrain_tokens_stage(tables: Mapping[str, pl.LazyFrame], params: TokensParams, ctx: Context) -> StageOutput:
    """Token ids of every pre-training shard, in the corpus' order, for memory-mapped training:
    ``exports/tokens/manifest.json`` and the stats from the prepare step's records."""
    folder = ctx.folder or ctx.out_dir
    name = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["tokenizer"]["name"]
    tokenizer = load_tokenizer(ctx.tokenizer)
    splits = token_splits(tables[SHARDS].collect())
    stats = StageStats()
    for split, shards in splits.items():
        stats.rows_out[f"{split}_documents"] = sum(s["documents"] for s in shards)
        stats.info[f"{split}_tokens"] = sum(s["token_count"] for s in shards)
        mismatched = sum(s["num_tokens_mismatch"] for s in shards)
        if mismatched:
            stats.info[f"{split}_num_tokens_mismatch"] = mismatched
    out = tokens_manifest(splits, tokenizer, tokenizer.token_to_id(EOS_TOKEN), name, tokenizer_sha256(ctx.tokenizer))
    write_text(json.dumps(out, indent=2) + "\n", ctx.out_dir / TOKENS_MANIFEST)
    stats.info["note"] = f"{stats.info.get('train_tokens', 0):,} train tokens memory-mappable in {TOKENS_DIR}"
    return StageOutput({}, stats)
