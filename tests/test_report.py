"""The report's plots, read back from their matplotlib figures: sources labelled, axes labelled and
scaled as intended, the rules marked, and the plotted numbers equal to a plain reading of the raw
sample (Magazine Subscriptions) or of the demo's written shards."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pipeline_stages
import polars as pl
import pytest
from conftest import REPO

from recgpt_data.pipeline.runner import run_spec
from recgpt_data.pipeline.spec import load_spec
from recgpt_data.report import (
    TABLES,
    ReportParams,
    drops_plot,
    history_plot,
    read_tables,
    share_plot,
    stage_rates,
    tokens_plot,
    write_report,
)

SOURCE = "amazon2018"


@pytest.fixture(scope="module")
def magazines(shared: Path, tmp_path_factory: pytest.TempPathFactory):
    """The magazines spec's final tables and stats, and the plain per-user counts of its raw file."""
    folder = tmp_path_factory.mktemp("report")
    (folder / "spec.toml").write_text(pipeline_stages.spec_text(shared), encoding="utf-8")
    result = run_spec(load_spec(folder / "spec.toml"), folder / "out")
    path = shared / "amazon2018" / "Magazine_Subscriptions_5.json"
    per_user = Counter(json.loads(line)["reviewerID"] for line in path.read_text(encoding="utf-8").splitlines())
    return result, per_user


def bar_heights(axes) -> list[float]:
    return [patch.get_height() for patch in axes.patches]


def test_history_plot(magazines) -> None:
    result, per_user = magazines
    fig = history_plot(read_tables(result.tables).lengths, 5)
    (axes,) = fig.axes
    assert axes.get_xscale() == "log" and axes.get_xlim()[0] == min(5, min(per_user.values()))
    assert axes.get_xlabel() == "interactions per user and dataset (log scale)" and axes.get_ylabel() == "users"
    assert [t.get_text() for t in axes.get_legend().get_texts()] == [f"{SOURCE} ({len(per_user):,} users)"]
    (line,) = [line for line in axes.get_lines() if line.get_linestyle() == "--"]
    assert list(line.get_xdata()) == [5, 5]
    (outline,) = axes.patches  # one step outline per source: its top edge is the histogram
    heights = outline.get_xy()[1:-1:2, 1]
    assert heights.sum() == len(per_user)


def test_tokens_plot(magazines) -> None:
    result, per_user = magazines
    documents = result.tables["documents"].select("source", "num_tokens").collect()
    fig = tokens_plot(documents, 2048)
    (axes,) = fig.axes
    assert axes.get_xscale() == "linear" and axes.get_xlim()[0] == 0 and axes.get_xlim()[1] > 2048
    assert axes.get_ylabel() == "documents" and axes.get_xlabel().startswith("tokens (GPT-NeoX-20B), bins of ")
    long = sum(1 for n in per_user.values() if n >= 6)
    assert [t.get_text() for t in axes.get_legend().get_texts()] == [f"{SOURCE} ({long:,} documents)"]
    assert sum(bar_heights(axes)) == long
    (cap,) = [line for line in axes.get_lines() if line.get_linestyle() == "--"]
    assert list(cap.get_xdata()) == [2048, 2048]
    assert any(t.get_text().startswith("2,048-token cap: ") for t in axes.texts)


def test_drops_and_share_plots(magazines) -> None:
    result, per_user = magazines
    fig = drops_plot(stage_rates(result.stats))
    (axes,) = fig.axes
    assert [t.get_text() for t in axes.get_yticklabels()] == ["t_histories: short_history"]
    assert [p.get_width() for p in axes.patches] == [sum(n for n in per_user.values() if n < 6)]
    assert axes.get_xlabel() == "rows dropped"
    assert drops_plot([{"stage": "s", "rows_in": 3, "rows_out": 3, "reasons": []}]) is None
    share = share_plot(read_tables({"documents": result.tables["documents"]}).table)
    (axes,) = share.axes
    assert [t.get_text() for t in axes.get_yticklabels()] == [SOURCE]
    assert [p.get_width() for p in axes.patches] == [100.0]
    assert axes.get_xlabel() == "share of tokens (%)"


def test_the_report_reads_each_table_once(magazines, tmp_path: Path) -> None:
    """Its numbers and its plots come from one scan of each table: every row passes once."""
    result, _ = magazines
    passed: Counter[str] = Counter()

    def counted(name: str, frame: pl.LazyFrame) -> pl.LazyFrame:
        def count(batch: pl.DataFrame) -> pl.DataFrame:
            passed[name] += batch.height
            return batch

        return frame.map_batches(count)

    tables = {name: counted(name, result.tables[name]) for name in TABLES if name in result.tables}
    write_report(tables, result.stats, tmp_path, ReportParams())
    heights = {name: result.tables[name].select(pl.len()).collect().item() for name in tables}
    assert set(heights) == {"interactions", "documents", "instruct"} and all(heights.values())
    assert passed == heights
    assert (tmp_path / "report" / "tokens_per_document.png").is_file()


def test_demo_plots_name_each_source(demo_corpus: Path, tmp_path: Path) -> None:
    """On the demo (two sources in its shards), the token share per source is each source's share of
    the shards' num_tokens, and the report and the card embed all four plots."""
    shards = pl.read_parquet(sorted((demo_corpus / "data" / "pretrain").glob("*.parquet")))
    tokens = dict(shards.group_by("source").agg(pl.col("num_tokens").sum()).iter_rows())
    out = tmp_path / "out"  # a copy: a run, even a cached one, rewrites stats.json of the shared build
    shutil.copytree(demo_corpus, out)
    result = run_spec(load_spec(REPO / "pipelines" / "demo.toml"), out)
    assert set(result.states.values()) == {"cached"}
    (axes,) = share_plot(read_tables({"documents": result.tables["documents"]}).table).axes
    shown = dict(zip((t.get_text() for t in axes.get_yticklabels()), (p.get_width() for p in axes.patches)))
    total = sum(tokens.values())
    assert shown == pytest.approx({source: 100 * n / total for source, n in tokens.items()})
    card = (demo_corpus / "README.md").read_text()
    page = (demo_corpus / "report" / "index.md").read_text()
    for name in ("history_length", "tokens_per_document", "drops_by_stage", "token_share"):
        assert f"(report/{name}.png)" in card and f"({name}.png)" in page
        assert (demo_corpus / "report" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
