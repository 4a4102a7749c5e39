"""Stage ``write_pretrain``: the token budget, the global shuffle, the pre-training shards, their
exports and ``manifest.json`` (:mod:`recgpt_data.corpus`).

Its prepare step does the work, in tasks on the run's engine (per documents file, one for the
budget, per shard, read a slice of about ``slice_bytes`` of its text at a time, per gzip member of
about ``member_bytes`` of a train shard's JSON lines; see :func:`recgpt_data.corpus.write_corpus`),
and hands the stage function a one-row record of what it wrote, from which the function writes
``manifest.json`` and the stage's stats."""

from __future__ import annotations

import json
from collections.abc import Mapping

import polars as pl
from pydantic import Field

from recgpt_data.corpus import Layout, Written, manifest, require_streaming, write_corpus
from recgpt_data.io.parquet import write_scratch, write_text
from recgpt_data.io.storage import join, remove_tree
from recgpt_data.stage import Context, Drops, Params, Preparation, Prepared, StageOutput, StageStats, count, stage
from recgpt_data.tokenizer import tokenizer_sha256

WRITTEN = "pretrain_written"  # the prepare step's record for the stage function: one row, its JSON


class WritePretrainParams(Params):
    """The token budget, shard sizes and exports."""

    target_tokens: int | None = Field(None, ge=1)
    weights: dict[str, float] = Field(default_factory=dict)  # per source; default: by its tokens
    shard_rows: int = Field(100_000, ge=1)
    shard_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    slice_bytes: int = Field(32 * 1024 * 1024, ge=1)  # text bytes of a shard its task reads and sorts at a time
    row_group_bytes: int = Field(32 * 1024 * 1024, ge=1)  # the most text bytes of a shard's row group
    batch_rows: int = Field(20_000, ge=1)  # documents read at a time while scattering to shards
    member_bytes: int = Field(64 * 1024 * 1024, ge=1)  # JSON-lines bytes of a train shard per gzip member (task)
    jsonl: bool = True
    mds: bool = False


def prepare_corpus(prep: Preparation, params: WritePretrainParams, ctx: Context) -> Prepared:
    """Write the shards and exports into ``ctx.out_dir`` (with the output in object storage, the
    store's staging prefix, published with the stage) in tasks over the documents files and the
    shards; the record of what was written is the table :data:`WRITTEN`."""
    if params.mds:
        require_streaming()
    tasks = prep.task_folders(ctx)  # the store's prefixes where it is lent them: its tasks run on any node
    scratch = join(tasks.scratch, "corpus")
    remove_tree(scratch)  # what an interrupted attempt left
    [documents] = prep.buckets["documents"]
    held_out = prep.buckets["held_out"][0] if "held_out" in prep.buckets else None
    written = write_corpus(
        documents,
        held_out,
        Layout(str(scratch), str(tasks.out_dir), ctx.seed),
        prep.map,
        target_tokens=params.target_tokens,
        weights=params.weights,
        shard_rows=params.shard_rows,
        shard_bytes=params.shard_bytes,
        slice_bytes=params.slice_bytes,
        row_group_bytes=params.row_group_bytes,
        batch_rows=params.batch_rows,
        member_bytes=params.member_bytes,
        jsonl=params.jsonl,
        mds=params.mds,
    )
    path = prep.scratch / f"{WRITTEN}.parquet"
    write_scratch(pl.DataFrame({"json": [written.to_json()]}), path)
    return Prepared({WRITTEN: (str(path),)})


@stage(
    "write_pretrain",
    params=WritePretrainParams,
    reads=("documents",),
    optional_reads=("held_out",),
    settings=("tokenizer",),
    version="4",
    prepare=prepare_corpus,
    prepare_anywhere=True,
)
def write_pretrain_stage(tables: Mapping[str, pl.LazyFrame], params: WritePretrainParams, ctx: Context) -> StageOutput:
    """``manifest.json`` and the stats of what the prepare step wrote: the shards sampled to the
    token budget and shuffled across sources, the exports, and the leak check that proved no
    held-out interaction is in them. The manifest names the spec's tokenizer, the one
    ``pretrain_documents`` counted with, and its sha256."""
    written = Written.from_json(tables[WRITTEN].collect()["json"].item())
    tokenizer = {"name": ctx.tokenizer_name, "sha256": tokenizer_sha256(ctx.tokenizer)}
    text = json.dumps(manifest(written, tokenizer, ctx.seed), indent=2, ensure_ascii=False) + "\n"
    write_text(text, ctx.out_dir / "manifest.json")
    drops = Drops()
    drops.count("budget_sampled_out", written.sampled_out)
    stats = StageStats(rows_in={"documents": count(tables["documents"])})
    stats.info.update(
        {
            "shards": {s: len(r) for s, r in written.shards.items()},
            "budget": written.budget,
            "leak_check": written.leak_check,
            "exports": written.exports,
        }
    )
    return StageOutput({}, stats, drops)
