"""The ``recgpt-data`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from recgpt_data.errors import UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)


@app.command()
def ingest(
    format: Annotated[str, typer.Argument(help="source format, e.g. amazon2018, yelp, movielens")],
    paths: Annotated[list[Path], typer.Argument(help="raw files or folders")],
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    dataset: Annotated[str | None, typer.Option(help="dataset name (default: from the file name)")] = None,
) -> None:
    """Read raw dumps into canonical parquet tables, with rejects and a summary."""
    from recgpt_data.ingest import ingest as run_ingest
    from recgpt_data.sources import get_source
    from recgpt_data.ingest import resolve_files

    files, _ = resolve_files(get_source(format), paths)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} files"),
        TimeElapsedColumn(), console=console, transient=True,
    ) as progress:
        task = progress.add_task(f"ingest {format}", total=len(files))
        summary = run_ingest(format, paths, out, dataset, on_file=lambda p: progress.advance(task))
    table = Table(title=f"ingest {format} -> {out}")
    for column in ("read", "kept", "rejected"):
        table.add_column(column, justify="right")
    table.add_row(f"{summary.read:,}", f"{summary.kept:,}", f"{sum(summary.rejected.values()):,}")
    console.print(table)
    for reason, n in summary.rejected.items():
        console.print(f"  rejected {reason}: {n:,}")
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if summary.kept == 0:
        raise UsageError("no usable records in the input")


@app.command()
def run(
    spec: Annotated[Path, typer.Argument(help="pipeline spec (TOML)")],
    out: Annotated[Path | None, typer.Option("--out", help="output folder (default: out/<name>)")] = None,
    until: Annotated[str | None, typer.Option(help="stop after this stage")] = None,
) -> None:
    """Run the stages of a pipeline spec."""
    from recgpt_data.pipeline.runner import run_spec
    from recgpt_data.pipeline.spec import load_spec

    loaded = load_spec(spec)
    target = out or Path("out") / loaded.name
    result = run_spec(loaded, target, until=until)
    table = Table(title=f"{loaded.name} -> {target}")
    for column in ("stage", "rows in", "rows out", "dropped", "seconds"):
        table.add_column(column)
    for key, stats in result.stats.items():
        table.add_row(
            key,
            f"{sum(stats['rows_in'].values()):,}",
            ", ".join(f"{t}={n:,}" for t, n in stats["rows_out"].items()),
            f"{sum(stats['dropped'].values()):,}",
            str(stats["info"].get("seconds", "")),
        )
    console.print(table)


def main() -> None:
    """Entry point: runs the app, turning usage errors into one line and exit status 2."""
    try:
        app()
    except UsageError as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)
