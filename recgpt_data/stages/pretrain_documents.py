"""Stage ``pretrain_documents``: each pre-training user's history as chunked, token-counted RecGPT
documents (:mod:`recgpt_data.corpus`)."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl
from pydantic import Field

from recgpt_data.chunking import MAX_TOKENS, TokenCounter
from recgpt_data.corpus import build_documents, verify_token_counts
from recgpt_data.stage import PARTITION_USER, Context, Params, StageOutput, StageStats, stage
from recgpt_data.tokenizer import load_tokenizer


class DocumentsParams(Params):
    """The chunk cap, memory bounds, the validation share and how counts are checked."""

    max_tokens: int = Field(MAX_TOKENS, ge=64)
    buckets: int = Field(1, ge=1)  # user buckets inside one call, to bound memory further
    validation_fraction: float = Field(0.001, ge=0.0, le=1.0)
    exact_tokens: bool = False  # re-tokenize every document instead of summing line counts
    verify_fraction: float = Field(0.01, ge=0.0, le=1.0)


@stage(
    "pretrain_documents",
    params=DocumentsParams,
    reads=("interactions", "items"),
    writes=("documents",),
    partition=PARTITION_USER,
    settings=("tokenizer",),
    version="2",
)
def pretrain_documents_stage(tables: Mapping[str, pl.LazyFrame], params: DocumentsParams, ctx: Context) -> StageOutput:
    """Each pre-training user's history as RecGPT documents, chunked under ``max_tokens`` tokens of
    the spec's tokenizer."""
    counter = TokenCounter(load_tokenizer(ctx.tokenizer))
    built = build_documents(
        tables["interactions"],
        tables["items"],
        counter,
        max_tokens=params.max_tokens,
        buckets=params.buckets,
        validation_fraction=params.validation_fraction,
        seed=ctx.seed,
    )
    stats = StageStats(rows_in={"interactions": built.rows_in}, info=built.info)
    documents = built.documents
    if params.exact_tokens:
        exact = counter.count(documents["text"].to_list())
        built.drops.change("num_tokens_recounted", int((exact != documents["num_tokens"].to_numpy()).sum()))
        documents = documents.with_columns(pl.Series("num_tokens", exact, dtype=pl.Int64))
    else:
        stats.info["verified_documents"] = verify_token_counts(documents, counter, params.verify_fraction, ctx.seed)
    return StageOutput({"documents": documents}, stats, built.drops)
