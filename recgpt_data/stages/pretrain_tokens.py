"""Stage ``pretrain_tokens``: the written pre-training shards as memory-mappable token arrays
(:mod:`recgpt_data.pretrain_tokens`). Its prepare step tokenizes each shard in tasks of row ranges
on the run's engine, joined per shard (on any node: with the output in object storage a task reads
the published shard and stages its token files in the store); the stage function writes
``exports/tokens/manifest.json`` from their records."""

from __future__ import annotations

import json
from collections.abc import Mapping

import polars as pl
from pydantic import Field

from recgpt_data.errors import UsageError
from recgpt_data.io.parquet import write_scratch, write_text
from recgpt_data.io.storage import join, remove_tree
from recgpt_data.pretrain_tokens import (
    EOS_TOKEN,
    RECORD_SCHEMA,
    TOKENS_DIR,
    TOKENS_MANIFEST,
    piece_jobs,
    token_dtype,
    token_splits,
    tokenize_shards,
    tokens_manifest,
)
from recgpt_data.stage import Context, Params, Preparation, Prepared, StageOutput, StageStats, stage
from recgpt_data.tokenizer import load_tokenizer, tokenizer_sha256

SHARDS = "token_shards"  # the prepare step's records for the stage function: one row per shard
LAYOUT = "token_layout"  # and the arrays' dtype and EOS id: one row, so the function loads no tokenizer


class TokensParams(Params):
    """How much text is encoded at a time (the encodings held at once take some 75 MB per MiB),
    and how many tokens one task tokenizes: a shard is cut into row ranges of about that many."""

    batch_bytes: int = Field(4 << 20, ge=1)  # bytes of text encoded at a time
    piece_tokens: int = Field(4_000_000, ge=1)  # tokens of a shard tokenized in one task


def prepare_tokens(prep: Preparation, params: TokensParams, ctx: Context) -> Prepared:
    """Tokenize every shard ``manifest.json`` lists, in tasks of about ``piece_tokens`` tokens each,
    under the spec's tokenizer, which must be the one ``manifest.json`` records; their records are
    the table :data:`SHARDS`, the arrays' dtype and EOS id the table :data:`LAYOUT`."""
    folder = ctx.folder or ctx.out_dir
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise UsageError(f"pretrain_tokens: no manifest.json in {folder}; put it after write_pretrain")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if tokenizer_sha256(ctx.tokenizer) != manifest["tokenizer"]["sha256"]:
        raise UsageError("pretrain_tokens: its tokenizer is not the one write_pretrain recorded in manifest.json")
    tokenizer = load_tokenizer(ctx.tokenizer)
    eos_id = tokenizer.token_to_id(EOS_TOKEN)
    if eos_id is None:
        raise UsageError(f"pretrain_tokens: the tokenizer has no {EOS_TOKEN} token")
    tasks = prep.task_folders(ctx)  # the store's published shards and staging prefix where it is lent them
    pieces = join(tasks.scratch, "tokens")
    remove_tree(pieces)  # what an interrupted attempt left
    folders = (tasks.folder, tasks.out_dir, pieces)
    jobs = piece_jobs(manifest, folders, ctx.tokenizer, params.batch_bytes, params.piece_tokens)
    records = pl.DataFrame(tokenize_shards(jobs, prep.map), schema=RECORD_SCHEMA)
    tables = {SHARDS: records, LAYOUT: pl.DataFrame({"dtype": [token_dtype(tokenizer).str], "eos_id": [eos_id]})}
    for name, frame in tables.items():
        write_scratch(frame, prep.scratch / f"{name}.parquet")
    return Prepared({name: (str(prep.scratch / f"{name}.parquet"),) for name in tables})


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
    ``exports/tokens/manifest.json`` and the stats from the prepare step's records. The tokenizer's
    name and sha256 are the ones ``manifest.json`` records, which the prepare step checked."""
    folder = ctx.folder or ctx.out_dir
    recorded = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["tokenizer"]
    [(dtype, eos_id)] = tables[LAYOUT].collect().rows()
    splits = token_splits(tables[SHARDS].collect())
    stats = StageStats()
    for split, shards in splits.items():
        stats.rows_out[f"{split}_documents"] = sum(s["documents"] for s in shards)
        stats.info[f"{split}_tokens"] = sum(s["token_count"] for s in shards)
        mismatched = sum(s["num_tokens_mismatch"] for s in shards)
        if mismatched:
            stats.info[f"{split}_num_tokens_mismatch"] = mismatched
    out = tokens_manifest(splits, dtype, eos_id, recorded["name"], recorded["sha256"])
    write_text(json.dumps(out, indent=2) + "\n", ctx.out_dir / TOKENS_MANIFEST)
    stats.info["note"] = f"{stats.info.get('train_tokens', 0):,} train tokens memory-mappable in {TOKENS_DIR}"
    return StageOutput({}, stats)
