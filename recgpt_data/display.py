"""What the CLI draws: a run's progress in rows (with rate and time left), its summary table narrow
enough for an 80-column terminal, and dropped or blanked rows one field a line, so that the fields a
drop was judged on are never cut away as columns of a wide frame."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    import polars as pl

SHOWN_CHARS = 300  # a longer value is shown up to here, with its length


class RowRateColumn(ProgressColumn):
    """Rows per second so far (rows done over time elapsed)."""

    def render(self, task: Task) -> Text:
        if not task.completed or not task.elapsed:
            return Text("", style="progress.data.speed")
        return Text(f"{task.completed / task.elapsed:,.0f} rows/s", style="progress.data.speed")


class RowCountColumn(ProgressColumn):
    """Rows done of rows in, and buckets done of buckets for a partitioned stage."""

    def render(self, task: Task) -> Text:
        parts = task.fields.get("parts", 1)
        buckets = f" ({task.fields.get('parts_done', 0)}/{parts} buckets)" if parts > 1 else ""
        total = f"{task.total:,.0f}" if task.total is not None else "?"
        return Text(f"{task.completed:,.0f}/{total} rows{buckets}", style="progress.download")


def run_progress(console: Console) -> Progress:
    """The progress display of ``recgpt-data run``: one bar per running stage, in rows."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        RowCountColumn(),
        RowRateColumn(),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def count(n: float) -> str:
    """A count exact with thousands separators below a million, else to three figures (12.3M)."""
    if n < 1_000_000:
        return f"{n:,.0f}"
    for unit, size in (("B", 1e9), ("M", 1e6)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    raise AssertionError("unreachable")


def size(n: int) -> str:
    """A byte count to three figures in K, M or G (1024-based)."""
    value = float(n)
    for unit in ("", "K", "M", "G"):
        if value < 1000 or unit == "G":
            return f"{value:.3g}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def summary_table(title: str, stats: Mapping[str, Mapping[str, Any]], states: Mapping[str, str]) -> Table:
    """Each stage's state, rows in, rows out per table (one a line), rows dropped, seconds and bytes
    written, in compact numbers: fits 80 columns without cutting a stage name or a count."""
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False)
    table.add_column("stage", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for column in ("rows in", "rows out", "dropped", "secs", "bytes"):
        table.add_column(column, justify="right", no_wrap=True)
    for key, record in stats.items():
        table.add_row(
            key,
            states[key],
            count(sum(record["rows_in"].values())),
            "\n".join(f"{name} {count(n)}" for name, n in record["rows_out"].items()),
            count(sum(record["dropped"].values())),
            f"{record.get('seconds', 0):.1f}",
            size(record.get("bytes_written", 0)),
        )
    return table


def shown_value(value: Any) -> str:
    """A field's value as one line: long texts cut at ``SHOWN_CHARS`` with their full length said."""
    text = str(value).replace("\r", "\\r").replace("\n", "\\n")
    if len(text) > SHOWN_CHARS:
        return f"{text[:SHOWN_CHARS]}… ({len(text):,} chars)"
    return text


def show_rows(console: Console, heading: str, rows: pl.DataFrame, reason: str) -> None:
    """Print each row as its reason, then every field that has a value, one a line."""
    console.print(f"[bold]{heading}[/bold] ({rows.height:,} shown)")
    for index, row in enumerate(rows.iter_rows(named=True), start=1):
        console.print(f"  {index}. {row[reason]}", markup=False, highlight=False)
        for name, value in row.items():
            if name != reason and value is not None:
                console.print(f"     {name}: {shown_value(value)}", markup=False, highlight=False, soft_wrap=True)
