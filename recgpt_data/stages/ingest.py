"""Stage ``ingest``: every declared source read into the canonical tables (:mod:`recgpt_data.ingest`),
optionally a sample of its users (:mod:`recgpt_data.sampling`).

The reading is the prepare step's, in tasks on the run's engine (:mod:`recgpt_data.ingest_tasks`):
one per input file, and big files of a role read line by line cut into blocks of lines, one task
each. The stage's tables are the files those tasks wrote; the stage function only accounts for them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl
from pydantic import Field, field_validator

from recgpt_data.ingest import FileSummary, IngestSummary, missing_items, resolve_files
from recgpt_data.ingest_tasks import (
    REJECTS,
    SAMPLED_OUT,
    Block,
    FileTask,
    Piece,
    columns_of,
    line_shifts,
    merged,
    open_file,
    read_block,
    shifted,
)
from recgpt_data.io.parquet import write_parquet
from recgpt_data.io.storage import Location, is_remote, join, location_of, remove, remove_tree
from recgpt_data.names import DatasetName
from recgpt_data.pipeline.spec import resolve_input
from recgpt_data.sampling import REASON as NOT_SAMPLED
from recgpt_data.sources import get_source
from recgpt_data.stage import (
    Context,
    Drops,
    Params,
    Preparation,
    Prepared,
    RawPath,
    StageOutput,
    StageStats,
    stage,
)


class SourceSpec(Params):
    """One source of an ingest stage: a format and its files or folders."""

    format: str
    paths: list[RawPath]
    dataset: DatasetName | None = None
    enabled: bool = True  # false (or a var that says so) leaves an optional source out


class IngestParams(Params):
    """The sources to read, the share of users to keep (all by default), and the size of the blocks
    of lines that a big file of a role read line by line is cut into, each parsed in its own task."""

    sources: list[SourceSpec]
    sample: float | None = Field(default=None, gt=0, le=1)  # keep this fraction of users (recgpt_data.sampling)
    block_bytes: int = Field(default=256 << 20, gt=0)  # big line-oriented files are parsed in blocks of this size

    @field_validator("sources")
    @classmethod
    def enabled_only(cls, sources: list[SourceSpec]) -> list[SourceSpec]:
        """The sources switched on: a disabled one is neither read nor part of the fingerprint."""
        return [s for s in sources if s.enabled]

    def datasets_made(self) -> tuple[str, ...]:
        """Each source's dataset where it names one, else its format (all of that source's datasets)."""
        return tuple(s.dataset or s.format for s in self.sources)


def as_declared(file: str, roots: Sequence[tuple[Location, str]]) -> str:
    """``file``, found under one of a source's ``(resolved, declared)`` paths (local paths, or URLs
    of an object store), named from the path as the spec declares it (``demo:amazon2018/...``,
    ``../data/...``, ``s3://...``), so that the stats of the same spec read the same on every machine."""
    for resolved, declared in roots:
        if is_remote(resolved):
            if file == resolved or file.startswith(f"{resolved}/"):
                relative = file[len(resolved) + 1 :]
                return f"{declared.rstrip('/')}/{relative}" if relative else declared
        elif not is_remote(file) and Path(file).is_relative_to(resolved):
            relative = Path(file).relative_to(resolved).as_posix()
            return declared if relative == "." else f"{declared.rstrip('/')}/{relative}"
    return file


SOURCES = "ingest_sources"  # the prepare step's accounting, one row per source, for the stage function


@dataclass(frozen=True)
class SourcePlan:
    """One source's resolved files, as tasks, with what its accounting needs."""

    format: str
    roots: list[tuple[Location, str]]
    tasks: list[FileTask]
    outputs: list[str]  # where each file's rows of its table went when read in one go: their order
    skipped: list[str]


def plan_source(
    spec: SourceSpec, params: IngestParams, ctx: Context, folder: Path, shared: Location, first: int
) -> SourcePlan:
    """The source's files (inputs on an object store listed there, each task reading its own
    object), as tasks numbered from ``first`` that write under ``shared`` (``folder`` itself, or the
    store's prefix in its place)."""
    roots = [(resolve_input(p, ctx.spec_dir), p) for p in spec.paths]
    source = get_source(spec.format)
    files, skipped = resolve_files(source, [resolved for resolved, _ in roots], folder, spec.dataset)
    tasks = [
        FileTask(
            number=first + k,
            format=spec.format,
            role=source.roles.index(file.role),
            table=file.role.table,
            path=str(file.path),
            dataset=file.dataset,
            folder=str(shared),
            block_bytes=params.block_bytes,
            sample=params.sample,
            seed=ctx.seed,
        )
        for k, file in enumerate(files)
    ]
    return SourcePlan(spec.format, roots, tasks, [str(file.output) for file in files], skipped)


def prepare_ingest(prep: Preparation, params: IngestParams, ctx: Context) -> Prepared:
    """Read every input file in tasks (:mod:`recgpt_data.ingest_tasks`): small files whole, big ones
    cut into blocks of lines that are parsed apart. The pieces become the stage's tables, adopted
    whole: rows in the order of the files' outputs (as one ingest of each source writes them),
    rejects in source and file order, each file's pieces in order; the pieces of a plain file's
    byte ranges, numbered from 1, are rewritten with the file's line numbers once all are read. Each source's accounting, its
    files named as the spec declares them, is a small table for :func:`ingest_stage`.

    The tasks write their copies and pieces in the step's task folders (in the store with the
    output in object storage), and each reads its own input file, a local path or an object's URL
    (the driver only lists objects and reads the start of each), so they run on any node. The
    copies of compressed files' blocks are deleted once all blocks are parsed."""
    scratch = prep.scratch / "ingest"
    shared = join(prep.task_folders(ctx).scratch, "ingest")
    remove_tree(scratch)  # what an interrupted run left
    remove_tree(shared)
    planned: list[SourcePlan] = []
    for index, spec in enumerate(params.sources):
        first = sum(len(p.tasks) for p in planned)
        name = f"{index:02d}-{spec.format}"
        planned.append(plan_source(spec, params, ctx, scratch / name, join(shared, name), first))
    tasks = [t for p in planned for t in p.tasks]
    pieces: dict[int, list[Piece]] = {t.number: [] for t in tasks}
    blocks: list[Block] = []
    for whole, cut in prep.map(open_file, tasks):
        blocks += cut
        for piece in whole:
            pieces[piece.file].append(piece)
    for piece in prep.map(read_block, blocks):
        pieces[piece.file].append(piece)
    for block in blocks:  # only now: a block's task may be retried until the map is done
        if block.span is None:
            remove(location_of(block.read))
    ordered = {n: sorted(found, key=lambda p: p.index) for n, found in pieces.items()}
    shifts = line_shifts(ordered, blocks)
    for piece in prep.map(shifted, shifts):
        ordered[piece.file][piece.index] = piece
    for shift in shifts:  # the pieces numbered from 1, once every shifted one is written
        for table, (path, _) in shift.piece.tables.items():
            if ordered[shift.piece.file][shift.piece.index].tables[table][0] != path:
                remove(location_of(path))
    outputs = [o for p in planned for o in p.outputs]
    by_output = sorted(range(len(tasks)), key=lambda n: outputs[n])
    tables = {table: _files(table, [ordered[n] for n in by_output]) for table in ("interactions", "items")}
    tables[REJECTS] = _files(REJECTS, [ordered[t.number] for t in tasks])
    if params.sample is not None:
        tables[SAMPLED_OUT] = _files(SAMPLED_OUT, [ordered[n] for n in by_output])
    files = {name: tuple(path for path, _ in found) or (_empty(scratch, name),) for name, found in tables.items()}
    rows_out = {name: sum(n for _, n in tables[name]) for name in ("interactions", "items")}
    accounting = pl.DataFrame(
        [_accounting(p, [ordered[t.number] for t in p.tasks]) for p in planned],
        schema={"format": pl.String, "files": pl.String, "skipped": pl.String, "sampled_out": pl.Int64},
        orient="row",
    )
    write_parquet(accounting, scratch / f"{SOURCES}.parquet")
    return Prepared(
        tables={SOURCES: (str(scratch / f"{SOURCES}.parquet"),)}, outputs=files, stats={"rows_out": rows_out}
    )


def _files(table: str, pieces: list[list[Piece]]) -> list[tuple[str, int]]:
    """The files (and rows) of ``table`` that ``pieces`` wrote, in their order."""
    return [piece.tables[table] for found in pieces for piece in found if table in piece.tables]


def _empty(scratch: Path, table: str) -> str:
    """An empty ``table`` (no file had rows of it), for the stage to adopt all the same."""
    path = scratch / f"empty-{table}.parquet"
    write_parquet(pl.DataFrame(schema=columns_of(table)), path)
    return str(path)


def _accounting(planned: SourcePlan, pieces: list[list[Piece]]) -> tuple[str, str, str, int]:
    """One source's row of the accounting table: each file's summary (merged from its pieces) and the
    skipped files, named as declared, and the interactions of users left out of a sample."""
    files = [asdict(merged(found)) for found in pieces]
    for item in files:
        item["file"] = as_declared(item["file"], planned.roots)
    skipped = [as_declared(file, planned.roots) for file in planned.skipped]
    sampled_out = sum(p.tables[SAMPLED_OUT][1] for found in pieces for p in found if SAMPLED_OUT in p.tables)
    return planned.format, json.dumps(files), json.dumps(skipped), sampled_out


@stage(
    "ingest",
    params=IngestParams,
    writes=("interactions", "items"),
    version="2",
    prepare=prepare_ingest,
    prepare_anywhere=True,
)
def ingest_stage(tables: Mapping[str, pl.LazyFrame], params: IngestParams, ctx: Context) -> StageOutput:
    """Account for what the prepare step read: each source's summary, rows read per format, rejects
    counted as drops by ``<format>:<reason>``, and the users a sample left out; its tables are the
    prepare step's."""
    stats = StageStats()
    drops = Drops()
    read: list[IngestSummary] = []
    sampled_out = 0
    for row in tables[SOURCES].collect().iter_rows(named=True):
        summary = IngestSummary(
            format=row["format"],
            files=[FileSummary(**item) for item in json.loads(row["files"])],
            skipped=json.loads(row["skipped"]),
        )
        summary.dataset_warnings = missing_items([summary])
        read.append(summary)
        stats.rows_in[summary.format] = stats.rows_in.get(summary.format, 0) + summary.read
        for reason, n in summary.rejected.items():
            drops.count(f"{summary.format}:{reason}", n)
        sampled_out += row["sampled_out"]
    stats.info["sources"] = [summary.to_dict() for summary in read]
    stats.info["warnings"] = [f.warning for s in read for f in s.files if f.warning] + missing_items(read)
    if params.sample is not None:
        drops.count(NOT_SAMPLED, sampled_out)
        stats.info["sample"] = params.sample
    return StageOutput({}, stats, drops)
