"""Stage ``write_pretrain``: the token budget, the global shuffle, the pre-training shards, their
exports and ``manifest.json`` (:mod:`recgpt_data.corpus`)."""

from __future__ import annotations

import json
from collections.abc import Mapping

import polars as pl
from pydantic import Field

from recgpt_data.corpus import manifest, require_streaming, write_corpus
from recgpt_data.io.parquet import write_text
from recgpt_data.stage import Context, Params, StageOutput, StageStats, count, stage
from recgpt_data.tokenizer import tokenizer_sha256


class WritePretrainParams(Params):
    """The token budget, shard sizes and exports."""

    target_tokens: int | None = Field(None, ge=1)
    weights: dict[str, float] = Field(default_factory=dict)  # per source; default: by its tokens
    shard_rows: int = Field(100_000, ge=1)
    shard_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    batch_rows: int = Field(20_000, ge=1)  # documents read at a time while scattering to shards
    jsonl: bool = True
    mds: bool = False


@stage(
    "write_pretrain",
    params=WritePretrainParams,
    reads=("documents",),
    optional_reads=("held_out",),
    settings=("tokenizer",),
    version="1",
)
def write_pretrain_stage(tables: Mapping[str, pl.LazyFrame], params: WritePretrainParams, ctx: Context) -> StageOutput:
    """Sample to the token budget, shuffle across sources, write shards, manifest and exports,
    and prove no held-out interaction is in the written shards. The manifest names the spec's
    tokenizer, the one ``pretrain_documents`` counted with, and its sha256."""
    if params.mds:
        require_streaming()
    documents = tables["documents"]
    stats = StageStats(rows_in={"documents": count(documents)})
    written = write_corpus(
        documents,
        tables.get("held_out"),
        ctx,
        target_tokens=params.target_tokens,
        weights=params.weights,
        shard_rows=params.shard_rows,
        shard_bytes=params.shard_bytes,
        batch_rows=params.batch_rows,
        jsonl=params.jsonl,
        mds=params.mds,
    )
    tokenizer = {"name": ctx.tokenizer_name, "sha256": tokenizer_sha256(ctx.tokenizer)}
    text = json.dumps(manifest(written, tokenizer, ctx.seed), indent=2, ensure_ascii=False) + "\n"
    write_text(text, ctx.out_dir / "manifest.json")
    stats.info.update(
        {
            "shards": {s: len(r) for s, r in written.shards.items()},
            "budget": written.budget,
            "leak_check": written.leak_check,
            "exports": written.exports,
        }
    )
    return StageOutput({}, stats, written.drops)
