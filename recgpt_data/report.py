"""The corpus report: users, items, interactions and tokens per source (the shape of the RecGPT
paper's Table 4), histograms of history length and tokens per document, and what each stage kept
and dropped; written as ``report/index.md`` with PNG plots, its numbers also in ``stats.json``.

It reads whichever of the ``interactions``, ``documents`` and ``instruct`` tables the run produced,
so it reports on any pipeline. Nothing time-dependent is written, so the report is reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from recgpt_data.io.parquet import write_text
from recgpt_data.stage import Context, Frame, Params, StageOutput, StageStats, stage

KEYS = ["source", "dataset"]
TABLES = ("interactions", "documents", "instruct")


def corpus_table(tables: Mapping[str, Frame]) -> pl.DataFrame:
    """Per (source, dataset): users, items, interactions, documents, tokens, instruction pairs."""
    parts: list[pl.DataFrame] = []
    if "interactions" in tables:
        parts.append(
            tables["interactions"]
            .lazy()
            .group_by(KEYS)
            .agg(
                pl.col("user_id").n_unique().alias("users"),
                pl.col("item_id").n_unique().alias("items"),
                pl.len().alias("interactions"),
            )
            .collect()
        )
    if "documents" in tables:
        parts.append(
            tables["documents"]
            .lazy()
            .group_by(KEYS)
            .agg(pl.len().alias("documents"), pl.col("num_tokens").sum().alias("tokens"))
            .collect()
        )
    if "instruct" in tables:
        parts.append(tables["instruct"].lazy().group_by(KEYS).agg(pl.len().alias("instruction_pairs")).collect())
    if not parts:
        return pl.DataFrame(schema={"source": pl.String, "dataset": pl.String})
    table = parts[0]
    for part in parts[1:]:
        table = table.join(part, on=KEYS, how="full", coalesce=True)
    counts = [c for c in table.columns if c not in KEYS]
    return table.with_columns(pl.col(counts).fill_null(0).cast(pl.Int64)).sort(KEYS).select(KEYS + counts)


def history_lengths(tables: Mapping[str, Frame]) -> pl.Series:
    """Interactions per user per dataset (from ``interactions``, else the documents' item counts)."""
    if "interactions" in tables:
        frame = tables["interactions"].lazy().group_by(["dataset", "user_id"]).agg(pl.len().alias("n"))
    elif "documents" in tables:
        frame = tables["documents"].lazy().group_by(["dataset", "user_id"]).agg(pl.col("num_items").sum().alias("n"))
    else:
        return pl.Series("n", [], dtype=pl.Int64)
    return frame.collect()["n"].sort()


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


def corpus_summary(tables: Mapping[str, Frame]) -> dict[str, Any]:
    """The report's numbers: the per-source table with totals, distributions, split and task counts."""
    table = corpus_table(tables)
    counts = [c for c in table.columns if c not in KEYS]
    summary: dict[str, Any] = {
        "per_source": table.to_dicts(),
        "totals": {c: int(table[c].sum()) for c in counts},
        "history_length": describe(history_lengths(tables)),
    }
    if "documents" in tables:
        docs = tables["documents"].lazy()
        summary["tokens_per_document"] = describe(docs.select("num_tokens").collect()["num_tokens"].sort())
        if "split" in docs.collect_schema().names():
            splits = docs.group_by("split").agg(pl.len(), pl.col("num_tokens").sum()).sort("split").collect()
            summary["splits"] = {
                r["split"]: {"documents": r["len"], "tokens": r["num_tokens"]} for r in splits.to_dicts()
            }
    if "instruct" in tables and "task" in tables["instruct"].lazy().collect_schema().names():
        tasks = tables["instruct"].lazy().group_by("task").agg(pl.len()).sort("task").collect()
        summary["instruct_tasks"] = dict(tasks.iter_rows())
    return summary


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


def histogram(values: pl.Series, title: str, xlabel: str, path: Path) -> None:
    """A log-binned histogram PNG (matplotlib Agg, no timestamp or version in the file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    data = values.to_numpy()
    if len(data):
        top = max(int(data.max()), 2)
        bins = np.unique(np.geomspace(1, top + 1, num=40).round())
        axes.hist(data, bins=bins, color="#4c72b0")
        axes.set_xscale("log")
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("count")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", metadata={"Software": None})
    plt.close(figure)


def render(summary: Mapping[str, Any], rates: list[dict[str, Any]], plots: list[tuple[str, str]]) -> str:
    """The report page (Markdown) from the summary, the stage rates and the plot files."""
    parts = ["# Corpus report", "", "## Per source", "", per_source_markdown(summary), ""]
    for name, label in (
        ("history_length", "History length (interactions per user)"),
        ("tokens_per_document", "Tokens per document"),
    ):
        if name in summary:
            stats = summary[name]
            parts += [f"## {label}", "", markdown_table(list(stats), [list(stats.values())]), ""]
            parts += [f"![{label}]({file})" for file, title in plots if title == name] + [""]
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
    return "\n".join(parts)


def write_report(tables: Mapping[str, Frame], stages: Mapping[str, Mapping[str, Any]], folder: Path) -> dict[str, Any]:
    """Write ``folder/report/`` (index.md and plots) and return the corpus summary."""
    summary = corpus_summary(tables)
    plots: list[tuple[str, str]] = []
    lengths = history_lengths(tables)
    if lengths.len():
        histogram(lengths, "History length", "interactions per user (log)", folder / "report" / "history_length.png")
        plots.append(("history_length.png", "history_length"))
    if "documents" in tables:
        tokens = tables["documents"].lazy().select("num_tokens").collect()["num_tokens"]
        histogram(tokens, "Tokens per document", "tokens (log)", folder / "report" / "tokens_per_document.png")
        plots.append(("tokens_per_document.png", "tokens_per_document"))
    write_text(render(summary, stage_rates(stages), plots), folder / "report" / "index.md")
    return summary


@stage("report", params=Params, optional_reads=TABLES, summarises=True)
def report_stage(tables: Mapping[str, Frame], params: Params, ctx: Context) -> StageOutput:
    """Write the corpus report into the output folder; its numbers go to ``stats.json``."""
    stats = StageStats()
    stats.info["corpus"] = write_report(tables, ctx.stages, ctx.out_dir)
    return StageOutput({}, stats)
