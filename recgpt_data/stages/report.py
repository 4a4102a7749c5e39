"""Stage ``report``: the corpus report written into the output folder (:mod:`recgpt_data.report`,
whose :class:`~recgpt_data.report.ReportParams` are this stage's parameters)."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from recgpt_data.report import CORPUS, TABLES, ReportParams, write_report
from recgpt_data.stage import Context, StageOutput, StageStats, stage


@stage("report", params=ReportParams, optional_reads=TABLES, summarises=True, stats_keys=(CORPUS,))
def report_stage(tables: Mapping[str, pl.LazyFrame], params: ReportParams, ctx: Context) -> StageOutput:
    """Write the corpus report into the output folder; its numbers go to ``stats.json``."""
    summary = write_report(tables, ctx.stages, ctx.out_dir, params, ctx.folder)
    return StageOutput({}, StageStats(info={CORPUS: summary}))
