"""Stage ``card``: the dataset card and LICENSE for the folder built so far
(:mod:`recgpt_data.publish.card`, whose :class:`~recgpt_data.publish.card.CardParams` are this
stage's parameters)."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from recgpt_data.errors import UsageError
from recgpt_data.io.parquet import write_text
from recgpt_data.pipeline.run_warnings import run_warnings
from recgpt_data.publish.card import CardParams, data_configs, render_card, render_licence, source_pairs
from recgpt_data.stage import Context, StageOutput, StageStats, stage


@stage("card", params=CardParams, optional_reads=("interactions", "documents", "instruct"), summarises=True)
def card_stage(tables: Mapping[str, pl.LazyFrame], params: CardParams, ctx: Context) -> StageOutput:
    """Write the dataset card README.md, and LICENSE with each source's terms, for the folder built so far."""
    folder = ctx.folder or ctx.out_dir
    if not data_configs(folder):
        causes = [w["message"] for w in run_warnings(ctx.stages) if w["kind"] in ("stage", "mass_drop")]
        if causes:
            raise UsageError(f"card: the run left no rows to write in {folder}: " + "; ".join(causes))
        raise UsageError(f"card: no data/<config>/*.parquet files in {folder}; put the card after the writers")
    write_text(render_card(folder, tables, ctx.stages, params), ctx.out_dir / "README.md")
    write_text(render_licence(source_pairs(tables)), ctx.out_dir / "LICENSE")
    return StageOutput({}, StageStats(info={"configs": sorted(data_configs(folder))}))
