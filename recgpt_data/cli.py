"""The ``recgpt-data`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from recgpt_data.engines import WorkerCrash
from recgpt_data.errors import (
    EXIT_FILESYSTEM,
    EXIT_INTERRUPTED,
    EXIT_NETWORK,
    EXIT_USAGE,
    UsageError,
    filesystem_message,
)
from recgpt_data.io.storage import credentials_missing, location_of
from recgpt_data.names import shown

if TYPE_CHECKING:
    from recgpt_data.pipeline.spec import PipelineSpec

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # a traceback must never print a token or a record
    help="Build the RecGPT corpus: ingest raw dumps, run pipeline specs, publish to the Hub.",
)
console = Console(stderr=True)
OUT_HELP = "output folder, or an S3 URL s3://bucket/prefix (default: out/<name>)"
FOLDER_HELP = "a run's output folder, or its S3 URL"
CREDENTIALS_HELP = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"


@app.command()
def ingest(
    format: Annotated[str, typer.Argument(help="source format, e.g. amazon2018, yelp, movielens")],
    paths: Annotated[list[str], typer.Argument(help="raw files or folders, or S3 URLs s3://bucket/key or prefix")],
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    dataset: Annotated[str | None, typer.Option(help="dataset name (default: from the file name)")] = None,
) -> None:
    """Read raw dumps into canonical parquet tables, with rejects and a summary. Raw objects in S3
    are read as streams, with the store the standard AWS settings name (AWS_ENDPOINT_URL, ...)."""
    from recgpt_data.ingest import ingest as run_ingest
    from recgpt_data.ingest import resolve_files
    from recgpt_data.sources import get_source

    inputs = [location_of(path) for path in paths]
    files, _ = resolve_files(get_source(format), inputs, out, dataset)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} files"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(f"ingest {format}", total=len(files))
        summary = run_ingest(format, inputs, out, dataset, on_file=lambda p: progress.advance(task))
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


class RichReporter:
    """Draws a run's progress: one bar per stage (its buckets), then one line when it ends."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def stage_started(self, key: str, parts: int, rows: int) -> None:
        self.tasks[key] = self.progress.add_task(key, total=rows or None, parts=parts, parts_done=0)

    def part_done(self, key: str, rows: int) -> None:
        task = self.tasks[key]
        done = self.progress.tasks[self.progress.task_ids.index(task)].fields["parts_done"] + 1
        self.progress.update(task, advance=rows, parts_done=done)

    def stage_finished(self, key: str, state: str, stats: dict) -> None:
        if key in self.tasks:
            self.progress.remove_task(self.tasks.pop(key))
        rows = ", ".join(f"{t}={n:,}" for t, n in stats["rows_out"].items())
        seconds = stats.get("seconds") or 0
        done = sum(stats["rows_in"].values()) or sum(stats["rows_out"].values())
        rate = f"  ({done / seconds:,.0f} rows/s)" if state == "ran" and seconds and done else ""
        self.progress.console.print(
            f"{'[green]ran[/green]   ' if state == 'ran' else '[dim]cached[/dim]'} {key}  {rows}{rate}"
        )
        note = stats.get("info", {}).get("note")
        if state == "ran" and isinstance(note, str):
            self.progress.console.print(f"       {note}", markup=False)
        for warning in stats.get("warnings", []):
            self.progress.console.print(f"       [yellow]warning:[/yellow] {escape(warning['message'])}")


def default_out(spec: PipelineSpec) -> Path:
    """Where a spec's run goes without ``--out``: ``out/<name>`` below the current directory, or,
    where that holds no run, the first of ``out/<name>`` beside the spec or in the folder above it
    that does (a spec in ``pipelines/`` of a project run from the project's root)."""
    from recgpt_data.pipeline.store import STAGES

    here = Path("out") / spec.name
    for candidate in (here, spec.folder / "out" / spec.name, spec.folder.parent / "out" / spec.name):
        if (candidate / STAGES).is_dir():
            return candidate
    return here


def parse_vars(values: list[str]) -> dict[str, str]:
    """``--var name=value`` options as a mapping."""
    pairs = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise UsageError(f"--var wants name=value, got {value!r}")
        pairs[name] = text
    return pairs


@app.command()
def run(
    spec: Annotated[Path, typer.Argument(help="pipeline spec (TOML)")],
    out: Annotated[str | None, typer.Option("--out", help=OUT_HELP)] = None,
    until: Annotated[str | None, typer.Option(help="stop after this stage")] = None,
    only: Annotated[str | None, typer.Option(help="rerun just this stage, from cached inputs")] = None,
    force: Annotated[bool, typer.Option("--force", help="rerun stages even when their outputs are current")] = False,
    engine: Annotated[str, typer.Option(help="where stages run: local or ray")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (auto, ray://host:10001)")] = None,
    var: Annotated[
        list[str], typer.Option("--var", help="override an entry of the spec's vars table: name=value")
    ] = [],  # noqa: B006
    workers: Annotated[
        int, typer.Option(min=1, help="local worker processes for the stages' tasks, sharing the cores")
    ] = 1,
    task_cpus: Annotated[
        float | None,
        typer.Option(help="CPUs (threads) each task uses: Ray's declared num_cpus (default 1), or each local worker's"),
    ] = None,
    task_memory: Annotated[
        str | None,
        typer.Option(
            help="memory each task may use: what a Ray task declares, each local worker's bound (bytes, or e.g. 4GiB, 500M)"
        ),
    ] = None,
    sample: Annotated[
        float | None,
        typer.Option(help="a dry run on this fraction of the users, kept by a seeded hash of the user id"),
    ] = None,
) -> None:
    """Run the stages of a pipeline spec; stages whose outputs are current are skipped."""
    from recgpt_data.display import run_progress, summary_table
    from recgpt_data.engines import get_engine, parse_size
    from recgpt_data.pipeline.run_warnings import run_warnings
    from recgpt_data.pipeline.runner import run_spec
    from recgpt_data.pipeline.spec import load_spec

    loaded = load_spec(spec, parse_vars(var))
    target = location_of(out) if out else default_out(loaded)
    if sample is not None:
        from recgpt_data.sampling import sample_folder, with_sample

        loaded = with_sample(loaded, sample)
        target = location_of(out) if out else Path("out") / sample_folder(loaded.name, sample)
    memory = parse_size(task_memory) if task_memory is not None else None
    chosen = get_engine(engine, address, workers, task_cpus, memory)
    try:
        with run_progress(console) as progress:
            result = run_spec(
                loaded, target, until=until, only=only, force=force, engine=chosen, reporter=RichReporter(progress)
            )
    finally:
        chosen.close()
    console.print(summary_table(f"{loaded.name} -> {target}", result.stats, result.states))
    for warning in run_warnings(result.stats):
        console.print(f"[yellow]warning:[/yellow] {escape(warning['message'])}")


@app.command()
def status(
    spec: Annotated[Path, typer.Argument(help="pipeline spec (TOML)")],
    out: Annotated[str | None, typer.Option("--out", help=OUT_HELP)] = None,
    var: Annotated[
        list[str], typer.Option("--var", help="override an entry of the spec's vars table: name=value")
    ] = [],  # noqa: B006
) -> None:
    """Show each stage of a spec as done, stale or missing in an output folder."""
    from recgpt_data.pipeline.runner import spec_status
    from recgpt_data.pipeline.spec import load_spec

    loaded = load_spec(spec, parse_vars(var))
    target = location_of(out) if out else default_out(loaded)
    Console().print(f"{loaded.name} in {target}", markup=False, highlight=False, soft_wrap=True)
    table = Table()
    for column in ("stage", "state", "why"):
        table.add_column(column)
    colours = {"done": "green", "stale": "yellow", "missing": "red"}
    for item in spec_status(loaded, target):
        table.add_row(item.key, f"[{colours[item.state]}]{item.state}[/{colours[item.state]}]", item.reason)
    Console().print(table)


@app.command()
def check(
    spec: Annotated[Path, typer.Argument(help="pipeline spec (TOML)")],
    out: Annotated[str | None, typer.Option("--out", help=OUT_HELP)] = None,
    var: Annotated[
        list[str], typer.Option("--var", help="override an entry of the spec's vars table: name=value")
    ] = [],  # noqa: B006
) -> None:
    """Check a spec before running it: the plan, every input (of its format, by its first records)
    and the output folder's free space; one line per problem."""
    from recgpt_data.pipeline.preflight import preflight
    from recgpt_data.pipeline.spec import load_spec

    loaded = load_spec(spec, parse_vars(var))
    report = preflight(loaded, location_of(out) if out else default_out(loaded))
    for note in report.notes:
        console.print(note, markup=False, highlight=False, soft_wrap=True)
    for problem in report.problems:
        console.print("[red]problem:[/red] ", end="")
        console.print(problem, markup=False, highlight=False, soft_wrap=True)
    if report.problems:
        raise typer.Exit(EXIT_USAGE)
    console.print(f"{loaded.name}: ready to run")


@app.command()
def gc(
    out: Annotated[str, typer.Argument(help=FOLDER_HELP)],
    spec: Annotated[Path, typer.Option("--spec", help="the pipeline spec whose current stages are kept")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would be deleted, delete nothing")] = False,
    var: Annotated[
        list[str], typer.Option("--var", help="override an entry of the spec's vars table: name=value")
    ] = [],  # noqa: B006
) -> None:
    """Delete the cached intermediates under OUT/.stages that no current stage of the spec needs (old
    bucket cuts, stale stages, leftover scratch); the final folder's files are never touched."""
    from recgpt_data.pipeline.gc import collect
    from recgpt_data.pipeline.spec import load_spec

    usages = collect(load_spec(spec, parse_vars(var)), location_of(out), dry_run=dry_run)
    print(f"{'stage':<24} {'state':<16} {'bytes':>14} {'unneeded bytes':>15} {'files':>7}")
    for usage in usages:
        print(
            f"{usage.key:<24} {usage.state:<16} {usage.bytes:>14,} {usage.unneeded_bytes:>15,} {len(usage.unneeded):>7,}"
        )
    freed = sum(u.unneeded_bytes for u in usages)
    print(f"{'would free' if dry_run else 'freed'} {freed:,} bytes in {sum(len(u.unneeded) for u in usages):,} files")


@app.command()
def dropped(
    out: Annotated[str, typer.Argument(help=FOLDER_HELP)],
    stage: Annotated[str | None, typer.Option(help="only this stage")] = None,
    reason: Annotated[str | None, typer.Option(help="only rows dropped for this reason")] = None,
    show: Annotated[int, typer.Option(help="sample rows to print per stage and table")] = 0,
    export: Annotated[Path | None, typer.Option(help="write the selected rows to this parquet file")] = None,
    blanked: Annotated[
        bool, typer.Option("--blanked", help="rows whose value was blanked (with the original value), not dropped rows")
    ] = False,
) -> None:
    """Rows the stages of a run dropped (or, with --blanked, blanked): counts by stage, table and
    reason, a sample, or all of them."""
    import polars as pl

    from recgpt_data.display import show_rows
    from recgpt_data.io.parquet import write_parquet
    from recgpt_data.pipeline.dropped import dropped_rows

    chosen = [d for d in dropped_rows(location_of(out), blanked=blanked) if stage is None or d.stage == stage]
    table = Table(title=f"rows {'blanked' if blanked else 'dropped'} in {out}")
    for column in ("stage", "table", "reason", "rows"):
        table.add_column(column, justify="right" if column == "rows" else "left")
    frames = []
    for item in chosen:
        rows = item.rows if reason is None else item.rows.filter(pl.col(item.reason) == reason)
        for why, n in item.by_reason().items():
            if reason is None or why == reason:
                table.add_row(item.stage, item.table, why, f"{n:,}")
        if show:
            show_rows(Console(), f"{item.stage} / {item.table}", rows.head(show).collect(), item.reason)
        if export is not None:
            frames.append(rows.with_columns(pl.lit(item.stage).alias("stage"), pl.lit(item.table).alias("table")))
    Console().print(table)
    if export is not None:
        selected = pl.concat([f.collect() for f in frames], how="diagonal_relaxed") if frames else pl.DataFrame()
        write_parquet(selected, export)
        Console().print(f"wrote {selected.height:,} rows to {export}")


@app.command()
def publish(
    folder: Annotated[Path, typer.Argument(help="a built output folder (with README.md)")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Hub dataset repository, ORG/NAME")],
    private: Annotated[bool, typer.Option("--private", help="create the repository private")] = False,
    revision: Annotated[
        str | None, typer.Option(help="branch to commit to, created from main if new (default: main)")
    ] = None,
    allow_restricted: Annotated[
        bool, typer.Option("--allow-restricted", help="publish even sources whose terms forbid redistribution")
    ] = False,
) -> None:
    """Upload a built dataset folder to the Hugging Face Hub (token from HF_TOKEN or `hf auth login`)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    from recgpt_data.publish import publish_folder

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise UsageError(f"--repo-id {shown(repo_id)} is not a Hub repository id: {str(exc).splitlines()[0]}") from None
    report = publish_folder(
        folder,
        repo_id,
        private=private,
        revision=revision,
        allow_restricted=allow_restricted,
        on_message=lambda m: console.print(m),
    )
    console.print(
        f"published {report.uploaded} files ({report.skipped} already there, {report.deleted} deleted) to {report.url}"
    )


@app.command("plan-instruct")
def plan_instruct(
    spec: Annotated[Path | None, typer.Argument(help="pipeline spec whose instruct_pairs counts to plan")] = None,
    tables: Annotated[
        Path | None, typer.Option(help="canonical tables (interactions/, items/ parquet) to measure windows in")
    ] = None,
) -> None:
    """Report how many instruction pairs each source and task yields (default: the paper's counts)."""
    from recgpt_data.instruct.pairs import InstructPairsParams
    from recgpt_data.instruct.planner import PAPER_COUNTS, available_windows, plan, pool_interactions, total
    from recgpt_data.pipeline.planner import Settings, resolve_settings
    from recgpt_data.pipeline.spec import load_spec

    params, settings = PAPER_COUNTS, Settings()
    if spec is not None:
        loaded = load_spec(spec)
        found = [s.params for s in loaded.stages if s.stage == "instruct_pairs"]
        if not found:
            raise UsageError(f"{spec}: no instruct_pairs stage")
        params, settings = InstructPairsParams(**found[0]), resolve_settings(loaded)
    available = None
    sources = None
    if tables is not None:
        import polars as pl

        interactions = pool_interactions(pl.scan_parquet(tables / "interactions" / "**" / "*.parquet"), params.pool)
        items = pl.scan_parquet(tables / "items" / "**" / "*.parquet")
        available = available_windows(interactions, items, params, settings.tokenizer)
        sources = sorted({source for source, _ in available} | set(params.counts))
    rows = plan(params, sources, available)
    table = Table(title="instruction pairs per source and task")
    for column in ("source", "task", "requested", "available", "yields"):
        table.add_column(column, justify="left" if column in ("source", "task") else "right")
    shown = lambda n: "all" if n is None else f"{n:,}"  # noqa: E731
    for row in rows:
        table.add_row(
            row.source,
            row.task,
            shown(row.requested),
            "?" if row.available is None else f"{row.available:,}",
            "?" if row.yields is None else f"{row.yields:,}",
        )
    Console().print(table)
    grand = total(rows)
    Console().print(f"total: {'unknown (some source keeps every window)' if grand is None else f'{grand:,}'} pairs")


def network_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean the Hub (or any host) could not be reached."""
    from recgpt_data.publish.hub import transport_errors

    return transport_errors()


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type where it has none), cut to ``limit``."""
    text = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def fail(message: str, status: int) -> None:
    """Print ``error: message`` as one plain line (no markup read from it) and exit with ``status``."""
    console.print("[red]error:[/red] ", end="")
    console.print(message, markup=False, highlight=False, soft_wrap=True)
    sys.exit(status)


def main() -> None:
    """Entry point: runs the app, turning usage, file-system and network errors into one line and an
    exit status (see :mod:`recgpt_data.errors`)."""
    try:
        app()
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)
    except WorkerCrash as exc:
        fail(str(exc), 1)
    except KeyboardInterrupt:
        fail("interrupted; finished work is kept and a rerun resumes", EXIT_INTERRUPTED)
    except Exception as exc:  # sorted by kind below; anything else is a bug and keeps its traceback
        if credentials_missing(exc):
            fail(f"no credentials for the object store ({first_line(exc)}): {CREDENTIALS_HELP}", EXIT_USAGE)
        if isinstance(exc, network_errors()):
            fail(f"cannot reach the Hugging Face Hub: {first_line(exc)}", EXIT_NETWORK)
        if isinstance(exc, OSError):
            fail(filesystem_message(exc), EXIT_FILESYSTEM)
        raise
