"""The corpus report: users, items, interactions and tokens per source (the shape of the RecGPT
paper's Table 4), plots per source of history length, tokens per document and token share, and a
chart of the rows each stage dropped by reason, and what each stage kept and dropped; written as ``report/index.md`` with PNG plots, its numbers also in ``stats.json``.

It reads whichever of the ``interactions``, ``documents`` and ``instruct`` tables the run produced,
so it reports on any pipeline. Nothing time-dependent is written, so the report is reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import Field

from recgpt_data.chunking import MAX_TOKENS
from recgpt_data.clean.filters import MIN_INTERACTIONS
from recgpt_data.io.parquet import write_text
from recgpt_data.paper_stats import against_paper, against_paper_markdown
from recgpt_data.stage import Params

KEYS = ["source", "dataset"]
TABLES = ("interactions", "documents", "instruct")
CORPUS = "corpus"  # the key of the summary in the report stage's stats ``info``, and atop ``stats.json``
LENGTH_KEYS = ["source", "dataset", "user_id"]


def count_queries(tables: Mapping[str, pl.LazyFrame]) -> dict[str, pl.LazyFrame]:
    """Per table the run produced, its counts per (source, dataset), as lazy queries: users, items and
    interactions; documents and tokens; instruction pairs."""
    queries = {}
    if "interactions" in tables:
        queries["interactions"] = (
            tables["interactions"]
            .lazy()
            .group_by(KEYS)
            .agg(
                pl.col("user_id").n_unique().alias("users"),
                pl.col("item_id").n_unique().alias("items"),
                pl.len().alias("interactions"),
            )
        )
    if "documents" in tables:
        queries["documents"] = (
            tables["documents"]
            .lazy()
            .group_by(KEYS)
            .agg(pl.len().alias("documents"), pl.col("num_tokens").sum().alias("tokens"))
        )
    if "instruct" in tables:
        queries["instruct"] = tables["instruct"].lazy().group_by(KEYS).agg(pl.len().alias("instruction_pairs"))
    return queries


def joined_counts(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """The per (source, dataset) counts of several tables as one table, zero where a table has none."""
    if not parts:
        return pl.DataFrame(schema={"source": pl.String, "dataset": pl.String})
    table = parts[0]
    for part in parts[1:]:
        table = table.join(part, on=KEYS, how="full", coalesce=True)
    counts = [c for c in table.columns if c not in KEYS]
    return table.with_columns(pl.col(counts).fill_null(0).cast(pl.Int64)).sort(KEYS).select(KEYS + counts)


def lengths_query(tables: Mapping[str, pl.LazyFrame]) -> pl.LazyFrame:
    """Interactions per user per dataset, with the source (from ``interactions``, else the documents'
    item counts), in a fixed order."""
    if "interactions" in tables:
        frame = tables["interactions"].lazy().group_by(LENGTH_KEYS).agg(pl.len().alias("n"))
    elif "documents" in tables:
        frame = tables["documents"].lazy().group_by(LENGTH_KEYS).agg(pl.col("num_items").sum().alias("n"))
    else:
        schema = {"source": pl.String, "dataset": pl.String, "user_id": pl.String, "n": pl.Int64}
        return pl.LazyFrame(schema=schema)
    return frame.sort(LENGTH_KEYS)


@dataclass(frozen=True)
class Reading:
    """What the report and its plots need from the run's tables: the per (source, dataset) counts of
    each table (``counts``), interactions per user (``lengths``), each document's source and tokens
    (``tokens``), and documents and tokens per split and pairs per task where the tables have them."""

    counts: dict[str, pl.DataFrame]
    lengths: pl.DataFrame
    tokens: pl.DataFrame | None = None
    splits: pl.DataFrame | None = None
    tasks: pl.DataFrame | None = None

    @property
    def table(self) -> pl.DataFrame:
        """Per (source, dataset): users, items, interactions, documents, tokens, instruction pairs."""
        return joined_counts(list(self.counts.values()))


def read_tables(tables: Mapping[str, pl.LazyFrame]) -> Reading:
    """The :class:`Reading` of the run's tables, every query collected together so that each table
    is scanned once, its columns shared by the queries that read it."""
    queries = {f"counts:{name}": query for name, query in count_queries(tables).items()}
    queries["lengths"] = lengths_query(tables)
    if "documents" in tables:
        documents = tables["documents"].lazy()
        queries["tokens"] = documents.select("source", "num_tokens")
        if "split" in documents.collect_schema().names():
            queries["splits"] = documents.group_by("split").agg(pl.len(), pl.col("num_tokens").sum()).sort("split")
    if "instruct" in tables and "task" in tables["instruct"].lazy().collect_schema().names():
        queries["tasks"] = tables["instruct"].lazy().group_by("task").agg(pl.len()).sort("task")
    frames = dict(zip(queries, pl.collect_all(list(queries.values()))))
    counts = {name.split(":", 1)[1]: frame for name, frame in frames.items() if name.startswith("counts:")}
    return Reading(counts, frames["lengths"], frames.get("tokens"), frames.get("splits"), frames.get("tasks"))


def describe(values: pl.Series) -> dict[str, float | int]:
    """Count, min, median, mean, p90, p99 and max of a numeric column."""
    if values.len() == 0:
        return {"count": 0}
    return {
        "count": values.len(),
        "min": int(values.min()),
        "median": float(values.median()),
        "mean": round(float(values.mean()), 3),
        "p90": float(values.quantile(0.9, "nearest")),
        "p99": float(values.quantile(0.99, "nearest")),
        "max": int(values.max()),
    }


def summarise(reading: Reading) -> dict[str, Any]:
    """The report's numbers: the per-source table with totals, distributions, split and task counts."""
    table = reading.table
    counts = [c for c in table.columns if c not in KEYS]
    summary: dict[str, Any] = {
        "per_source": table.to_dicts(),
        "totals": {c: int(table[c].sum()) for c in counts},
        "history_length": describe(reading.lengths["n"].sort()),
    }
    if reading.tokens is not None:
        summary["tokens_per_document"] = describe(reading.tokens["num_tokens"].sort())
    if reading.splits is not None:
        summary["splits"] = {
            r["split"]: {"documents": r["len"], "tokens": r["num_tokens"]} for r in reading.splits.to_dicts()
        }
    if reading.tasks is not None:
        summary["instruct_tasks"] = dict(reading.tasks.iter_rows())
    return summary


def corpus_summary(tables: Mapping[str, pl.LazyFrame]) -> dict[str, Any]:
    """The report's numbers for the run's tables (see :func:`summarise`)."""
    return summarise(read_tables(tables))


def stage_rates(stages: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per stage: rows in and out, and each drop or change reason with its share of the rows in."""
    rows = []
    for key, stats in stages.items():
        rows_in = sum(stats.get("rows_in", {}).values())
        rows_out = sum(stats.get("rows_out", {}).values())
        reasons = [("dropped", r, n) for r, n in stats.get("dropped", {}).items()]
        reasons += [("changed", r, n) for r, n in stats.get("changed", {}).items()]
        rows.append(
            {
                "stage": key,
                "rows_in": rows_in,
                "rows_out": rows_out,
                "reasons": [
                    {"kind": kind, "reason": r, "rows": n, "rate": round(n / rows_in, 6) if rows_in else None}
                    for kind, r, n in reasons
                ],
            }
        )
    return rows


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; integers get thousands separators."""

    def cell(value: Any) -> str:
        return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def per_source_markdown(summary: Mapping[str, Any]) -> str:
    """The Table 4 style per-source table, with a total row."""
    rows = summary["per_source"]
    if not rows:
        return "_no tables to count_"
    header = list(rows[0].keys())
    body = [[r[c] for c in header] for r in rows]
    body.append(["**total**", ""] + [summary["totals"][c] for c in header[2:]])
    return markdown_table(header, body)


def rates_markdown(rates: list[dict[str, Any]]) -> str:
    """Each stage's drops and changes by reason, with their rates."""
    body = []
    for row in rates:
        if not row["reasons"]:
            body.append([row["stage"], row["rows_in"], row["rows_out"], "", "", ""])
        for item in row["reasons"]:
            rate = f"{item['rate']:.2%}" if item["rate"] is not None else ""
            body.append(
                [row["stage"], row["rows_in"], row["rows_out"], f"{item['kind']}: {item['reason']}", item["rows"], rate]
            )
    return markdown_table(["stage", "rows in", "rows out", "reason", "rows", "rate"], body)


PLOTS = (
    ("history_length.png", "History length per source (interactions per user and dataset)"),
    ("tokens_per_document.png", "Tokens per document per source, with the chunking cap"),
    ("drops_by_stage.png", "Rows dropped by stage and reason"),
    ("token_share.png", "Share of pre-training tokens per source"),
)


class ReportParams(Params):
    """Where the plots mark the corpus's rules: the user filter's minimum history length and the
    chunking cap (the defaults are those of ``filter_users`` and ``pretrain_documents``)."""

    min_interactions: int = Field(default=MIN_INTERACTIONS, ge=1)
    max_tokens: int = Field(default=MAX_TOKENS, ge=1)


def figure(height: float = 3.6) -> tuple[Any, Any]:
    """A matplotlib figure and axes on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7.2, height), dpi=100)


def save(fig: Any, path: Path) -> None:
    """Write a figure as PNG with no timestamp or version in the file, so reruns give the same bytes."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)


def source_colours(sources: list[str]) -> dict[str, Any]:
    """One fixed colour per source (sorted), the same in every plot."""
    import matplotlib

    palette = matplotlib.colormaps["tab10"]
    return {source: palette(i % 10) for i, source in enumerate(sorted(sources))}


def history_plot(lengths: pl.DataFrame, min_interactions: int) -> Any:
    """Histogram of history length, one outline per source, on a log axis that starts at the user
    filter's minimum (or the shortest history, if a later stage left one shorter), which is marked."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator, NullLocator, ScalarFormatter

    fig, axes = figure()
    low = min(min_interactions, int(lengths["n"].min()))
    high = int(lengths["n"].max()) + 1
    bins = np.unique(np.geomspace(low, max(high, low + 1), num=30).round())
    colours = source_colours(lengths["source"].unique().to_list())
    for source, colour in colours.items():
        values = lengths.filter(pl.col("source") == source)["n"].to_numpy()
        axes.hist(
            values, bins=bins, histtype="step", linewidth=1.8, color=colour, label=f"{source} ({len(values):,} users)"
        )
    axes.axvline(min_interactions, color="black", linestyle="--", linewidth=1)
    axes.annotate(
        f"min_interactions = {min_interactions}",
        (min_interactions, 1),
        xycoords=("data", "axes fraction"),
        xytext=(4, -12),
        textcoords="offset points",
        fontsize=8,
    )
    axes.set_xscale("log")
    steps = [m * 10**e for e in range(8) for m in (1, 2, 5)]
    axes.set_xticks(sorted({low, *(t for t in steps if low < t <= bins[-1])}))
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_locator(NullLocator())
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlim(low, bins[-1])
    axes.set_title("History length per source")
    axes.set_xlabel("interactions per user and dataset (log scale)")
    axes.set_ylabel("users")
    axes.legend(fontsize=8)
    return fig


def tokens_plot(tokens: pl.DataFrame, max_tokens: int) -> Any:
    """Histogram of tokens per document, stacked by source on a linear axis up to the chunking cap,
    which is marked, with the documents in the last bin before it counted."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    fig, axes = figure()
    width = max(max_tokens // 32, 1)
    top = max(max_tokens, int(tokens["num_tokens"].max()))
    bins = np.arange(0, top + width, width)
    colours = source_colours(tokens["source"].unique().to_list())
    values = [tokens.filter(pl.col("source") == s)["num_tokens"].to_numpy() for s in colours]
    axes.hist(
        values,
        bins=bins,
        stacked=True,
        color=list(colours.values()),
        label=[f"{s} ({len(v):,} documents)" for s, v in zip(colours, values)],
    )
    near = int((tokens["num_tokens"] > max_tokens - width).sum())
    axes.axvline(max_tokens, color="black", linestyle="--", linewidth=1)
    axes.annotate(
        f"{max_tokens:,}-token cap: {near:,} documents within {width} tokens of it",
        (max_tokens, 1),
        xycoords=("data", "axes fraction"),
        xytext=(-4, -12),
        textcoords="offset points",
        ha="right",
        fontsize=8,
    )
    axes.set_xlim(0, max(int(bins[-1]), max_tokens) + 2 * width)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title("Tokens per document per source")
    axes.set_xlabel(f"tokens (GPT-NeoX-20B), bins of {width}")
    axes.set_ylabel("documents")
    axes.legend(fontsize=8, loc="upper left")
    return fig


def drops_plot(rates: list[dict[str, Any]]) -> Any:
    """Horizontal bars: rows each stage dropped, one bar per reason that dropped any, labelled with
    count and rate; ``None`` when no stage dropped anything."""
    bars = [
        (f"{row['stage']}: {item['reason']}", item["rows"], item["rate"])
        for row in rates
        for item in row["reasons"]
        if item["kind"] == "dropped" and item["rows"]
    ]
    if not bars:
        return None
    fig, axes = figure(height=1.2 + 0.32 * len(bars))
    labels = [label for label, _, _ in bars][::-1]
    counts = [n for _, n, _ in bars][::-1]
    rates_ = [r for _, _, r in bars][::-1]
    axes.barh(labels, counts, color="#c44e52")
    for y, (n, rate) in enumerate(zip(counts, rates_)):
        share = f" ({rate:.1%} of rows in)" if rate is not None else ""
        axes.annotate(f"{n:,}{share}", (n, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    axes.set_xlim(0, max(counts) * 1.45)
    axes.set_title("Rows dropped by stage and reason")
    axes.set_xlabel("rows dropped")
    axes.tick_params(axis="y", labelsize=8)
    return fig


def share_plot(table: pl.DataFrame) -> Any:
    """Horizontal bars: each source's share of the pre-training tokens, labelled with the tokens."""
    per_source = table.group_by("source").agg(pl.col("tokens").sum()).sort("source", descending=True)
    total = max(int(per_source["tokens"].sum()), 1)
    fig, axes = figure(height=1.2 + 0.4 * per_source.height)
    colours = source_colours(per_source["source"].to_list())
    shares = [100 * n / total for n in per_source["tokens"]]
    axes.barh(per_source["source"].to_list(), shares, color=[colours[s] for s in per_source["source"]])
    for y, (share, n) in enumerate(zip(shares, per_source["tokens"])):
        axes.annotate(
            f"{share:.1f}% ({n:,} tokens)",
            (share, y),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    axes.set_xlim(0, 130)
    axes.set_title(f"Share of pre-training tokens per source ({total:,} tokens)")
    axes.set_xlabel("share of tokens (%)")
    return fig


def render(summary: Mapping[str, Any], rates: list[dict[str, Any]], plots: list[tuple[str, str]]) -> str:
    """The report page (Markdown) from the summary, the stage rates and the plot files."""
    captions = dict(plots)

    def embed(file: str) -> list[str]:
        return [f"![{captions[file]}]({file})", ""] if file in captions else []

    parts = ["# Corpus report", "", "## Per source", "", per_source_markdown(summary), ""]
    if "paper" in summary:
        parts += ["## Against the paper's corpus statistics", "", against_paper_markdown(summary["paper"]), ""]
    parts += embed("token_share.png")
    for name, label in (
        ("history_length", "History length (interactions per user)"),
        ("tokens_per_document", "Tokens per document"),
    ):
        if name in summary:
            stats = summary[name]
            parts += [f"## {label}", "", markdown_table(list(stats), [list(stats.values())]), ""]
            parts += embed(f"{name}.png")
    if "splits" in summary:
        parts += [
            "## Splits",
            "",
            markdown_table(
                ["split", "documents", "tokens"],
                [[k, v["documents"], v["tokens"]] for k, v in summary["splits"].items()],
            ),
            "",
        ]
    if "instruct_tasks" in summary:
        parts += [
            "## Instruction pairs",
            "",
            markdown_table(["task", "pairs"], [list(i) for i in summary["instruct_tasks"].items()]),
            "",
        ]
    parts += ["## Stages: rows kept, dropped and changed", "", rates_markdown(rates), ""]
    parts += embed("drops_by_stage.png")
    return "\n".join(parts)


def write_plots(
    reading: Reading, rates: list[dict[str, Any]], params: ReportParams, folder: Path
) -> list[tuple[str, str]]:
    """Draw the report's plots and save them into ``folder/report/``; (file, caption) of each one."""
    figures = {}
    if reading.lengths.height:
        figures[PLOTS[0]] = history_plot(reading.lengths, params.min_interactions)
    if reading.tokens is not None and reading.tokens.height:
        figures[PLOTS[1]] = tokens_plot(reading.tokens, params.max_tokens)
        figures[PLOTS[3]] = share_plot(joined_counts([reading.counts["documents"]]))
    figures[PLOTS[2]] = drops_plot(rates)
    drawn = [plot for plot, fig in figures.items() if fig is not None]
    for plot in drawn:
        save(figures[plot], folder / "report" / plot[0])
    return sorted(drawn, key=PLOTS.index)


def write_report(
    tables: Mapping[str, pl.LazyFrame],
    stages: Mapping[str, Mapping[str, Any]],
    folder: Path,
    params: ReportParams,
    built: Path | None = None,
) -> dict[str, Any]:
    """Write ``folder/report/`` (index.md and plots) and return the corpus summary; with ``built``
    (the output folder so far), the summary holds the written shards against the paper's figures."""
    reading = read_tables(tables)
    summary = summarise(reading)
    paper = against_paper(built) if built is not None else None
    if paper is not None:
        summary["paper"] = paper
    rates = stage_rates(stages)
    plots = write_plots(reading, rates, params, folder)
    write_text(render(summary, rates, plots), folder / "report" / "index.md")
    return summary
