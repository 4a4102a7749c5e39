"""Stage ``write_instruct``: the instruction pairs written into the output folder, parquet for
``load_dataset(folder, "instruct")`` and ``{prompt, response}`` JSON lines, the format llm-foundry's
finetuning loader reads."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from recgpt_data.io.parquet import write_parquet, write_text
from recgpt_data.stage import Context, Params, StageOutput, StageStats, stage

PARQUET = Path("data/instruct/train-00000-of-00001.parquet")
JSONL = Path("data/instruct/instruct.jsonl")
COLUMNS = ("prompt", "response", "task", "source", "dataset")


def instruct_jsonl(instruct: pl.DataFrame) -> str:
    """One ``{"prompt": ..., "response": ...}`` object a line, in table order."""
    return "".join(
        json.dumps({"prompt": prompt, "response": response}, ensure_ascii=False) + "\n"
        for prompt, response in instruct.select("prompt", "response").iter_rows()
    )


class WriteInstructParams(Params):
    """No parameters: the folder layout is the output contract."""


ORDER = ("source", "dataset", "user_id", "task")  # a user's pairs of a task stay in the order they came


@stage("write_instruct", params=WriteInstructParams, reads=("instruct",), version="2")
def write_instruct_stage(tables: Mapping[str, pl.LazyFrame], params: WriteInstructParams, ctx: Context) -> StageOutput:
    """Write ``data/instruct/`` (parquet with task and source columns, plus prompt/response JSONL),
    by source, dataset, user and task, whichever user bucket a pair came from, in one chunk so that
    the files' bytes do not depend on how many buckets there were."""
    instruct = tables["instruct"].sort(ORDER, maintain_order=True).collect().rechunk()
    stats = StageStats(rows_in={"instruct": instruct.height})
    write_parquet(instruct.select(COLUMNS), ctx.out_dir / PARQUET)
    write_text(instruct_jsonl(instruct), ctx.out_dir / JSONL)
    stats.info["files"] = [PARQUET.as_posix(), JSONL.as_posix()]
    return StageOutput({}, stats)
