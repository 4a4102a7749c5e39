"""Ingest: stream raw dumps of one source format into the canonical parquet tables.

``ingest(format, paths, out)`` writes ``out/interactions/<dataset>/<file>.parquet`` and
``out/items/<dataset>/<file>.parquet`` (one file per input file, row groups per batch, so memory
stays flat), every rejected record to ``out/rejects.jsonl`` (file, line, reason, raw text), and
``out/summary.json``, whose counts account for every input record: read = kept + rejected. A
dataset with interactions and no items is warned about (console and ``summary.json``): RecGPT's
text names every item by its title, so the ``clean`` stage would drop all of its interactions.

A kept value is a valid one: ids non-blank and of the source's form, ratings on the source's scale,
times within its range (see :class:`~recgpt_data.sources.base.Source`); anything else is a reject
with its reason. Every output path is checked to stay under ``out``. An ingest holds the folder's
lock (the one pipeline runs take) and writes ``summary.json`` last: an ingest that fails leaves no
summary and no partial file, so its output never looks complete.

The pipeline's ``ingest`` stage reads each file with the same :func:`read_batches`, in tasks, a big
file block by block (:mod:`recgpt_data.ingest_tasks`).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import TextIO

import polars as pl

from recgpt_data import schema as canonical
from recgpt_data.errors import UsageError
from recgpt_data.io.lock import folder_lock
from recgpt_data.io.parquet import AtomicParquetWriter, write_text
from recgpt_data.io.storage import Location, is_remote, join, missing, name_of, size
from recgpt_data.io.storage import files as storage_files
from recgpt_data.names import check_dataset, inside, shown
from recgpt_data.sources import get_source
from recgpt_data.sources.base import LINE, FileInfo, RawBatch, ReadState, Reject, Role, Source


@dataclass
class FileSummary:
    """The accounting of one input file."""

    file: str
    table: str
    dataset: str
    read: int = 0
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    truncated: bool = False
    warning: str | None = None


@dataclass
class IngestSummary:
    """The accounting of one ingest run: per file, and in total."""

    format: str
    files: list[FileSummary] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dataset_warnings: list[str] = field(default_factory=list)

    @property
    def read(self) -> int:
        return sum(f.read for f in self.files)

    @property
    def kept(self) -> int:
        return sum(f.kept for f in self.files)

    @property
    def rejected(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for f in self.files:
            total.update(f.rejected)
        return dict(sorted(total.items()))

    @property
    def warnings(self) -> list[str]:
        return [f.warning for f in self.files if f.warning] + self.dataset_warnings

    def kept_by_table(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for f in self.files:
            total[f.table] += f.kept
        return dict(sorted(total.items()))

    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "read": self.read,
            "kept": self.kept,
            "kept_by_table": self.kept_by_table(),
            "rejected": self.rejected,
            "warnings": self.warnings,
            "files": [asdict(f) for f in self.files],
            "skipped": self.skipped,
        }


@dataclass(frozen=True)
class InputFile:
    """One file to read in one role, the dataset its rows belong to and where they are written."""

    path: Location  # a local path, or an object's URL
    role: Role
    dataset: str
    output: Path


def missing_items(summaries: Sequence[IngestSummary]) -> list[str]:
    """A warning for every dataset the ``summaries`` kept interactions of and no items: without item
    titles the ``clean`` stage drops every one of those interactions."""
    kept: Counter[tuple[str, str]] = Counter()
    for summary in summaries:
        for f in summary.files:
            kept[f.dataset, f.table] += f.kept
    return [
        f"{dataset}: {n:,} interactions and no items (no metadata file was read for it, or none of its "
        "records was kept); `clean` drops the interactions of items without a title, so it will drop all of these"
        for (dataset, table), n in sorted(kept.items())
        if table == "interactions" and n and not kept[dataset, "items"]
    ]


def resolve_files(
    source: Source, paths: Sequence[Location], out: str | Path | None = None, dataset: str | None = None
) -> tuple[list[InputFile], list[str]]:
    """The files under ``paths`` that ``source`` reads, in a stable order, and those it skips.

    A named file that does not exist, that the source cannot read, or that is of another format by
    its first records, is an error, as is a dataset name that is not safe as a path and two files
    that would write the same output; inside a folder, files the source does not read (READMEs,
    genre lists), hidden files and anything under ``out`` (the tool's own outputs) are skipped and
    listed. Nothing is written. A path may be an object-store URL (text): its objects are listed,
    never downloaded, and only the start of each is read to look at its first records."""
    out = Path(out or ".")
    if dataset is not None:
        check_dataset(dataset)
    chosen: list[InputFile] = []
    skipped: list[str] = []
    for given in paths:
        named, children = _listing(given)
        if named is not None:
            roles = source.roles_for(_as_path(named))
            if not roles:
                raise UsageError(f"{shown(_as_path(named).name)} is not a {source.name} file this reader knows")
            chosen.extend(_input(source, named, role, out, dataset) for role in roles)
            continue
        for child, relative in children:
            roles = source.roles_for(_as_path(child))
            if not roles or _hidden(relative) or (not is_remote(child) and _within(Path(child), out)):
                skipped.append(str(child))
                continue
            chosen.extend(_input(source, child, role, out, dataset) for role in roles)
    if not chosen:
        raise UsageError(f"no {source.name} files found in: {shown(', '.join(map(str, paths)), 200)}")
    _refuse_collisions(chosen)
    return chosen, skipped


def _listing(given: Location) -> tuple[Location | None, list[tuple[Location, PurePosixPath]]]:
    """``given`` where it is a file, else the files under it (sorted, each with its path relative
    to ``given``); an error where there is neither. An object store is only listed."""
    if is_remote(given):
        if size(given) is not None:
            return given, []
        listed = storage_files(given)
        if not listed:
            raise UsageError(shown(missing(given), 200))
        return None, [(join(given, relative), PurePosixPath(relative)) for relative in listed]
    path = Path(given)
    if not path.exists():
        raise UsageError(f"no such file or folder: {shown(str(path), 200)}")
    if path.is_file():
        return path, []
    found = sorted(p for p in path.rglob("*") if p.is_file())
    return None, [(child, PurePosixPath(child.relative_to(path).as_posix())) for child in found]


def _as_path(location: Location) -> PurePath:
    """The path that names a file, for the names read off it (its file and folder names): a local
    path made absolute, or an object's ``bucket/key``."""
    if is_remote(location):
        return PurePosixPath(str(location).split("://", 1)[1])
    return Path(os.path.abspath(location))


def _hidden(relative: PurePath) -> bool:
    """A hidden file or one in a hidden folder (``.stages``, macOS ``._name`` copies)."""
    return any(part.startswith(".") for part in relative.parts)


def _within(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _input(source: Source, path: Location, role: Role, out: Path, dataset: str | None) -> InputFile:
    """``path`` in ``role``, checked: of this format by its first records (of an object, read from
    the start of its stream), with a safe dataset name."""
    if role.sniff is not None:
        problem = role.sniff(path)
        if problem is not None:
            raise UsageError(f"{shown(_as_path(path).name)}: {problem}; it is not a {source.name} {role.table} file")
    name = dataset if dataset is not None else source.dataset(_as_path(path))
    try:
        check_dataset(name)
    except UsageError as exc:
        raise UsageError(f"{shown(str(path), 200)}: {exc}; name the dataset with --dataset") from None
    return InputFile(path, role, name, inside(out, output_path(out, role.table, name, _as_path(path))))


def _refuse_collisions(files: list[InputFile]) -> None:
    """Refuse two input files that would write the same output file (the same name in one dataset)."""
    seen: dict[Path, Path] = {}
    for file in files:
        if file.output in seen and seen[file.output] != file.path:
            raise UsageError(
                f"{shown(str(seen[file.output]), 200)} and {shown(str(file.path), 200)} would both write "
                f"{file.output.name} of dataset {file.dataset}; ingest them into separate --out folders"
            )
        seen[file.output] = file.path


def canonical_batch(batch: RawBatch, role: Role, info: FileInfo, source: Source) -> tuple[pl.DataFrame, list[Reject]]:
    """Map a raw batch to canonical rows; rows missing a required field or holding a value the
    source cannot hold (:func:`invalid_reason`) become rejects."""
    rejects = list(batch.rejects)
    if not batch.frame.height:
        return canonical.empty(role.table), rejects
    mapped = role.mapping(batch.frame).with_columns(
        pl.lit(info.source).alias("source"),
        pl.lit(info.dataset).alias("dataset"),
        pl.lit(info.file).alias("src_file"),
        pl.col(LINE).alias("src_line"),
    )
    if role.table == "interactions" and "rating_max" not in mapped.columns:
        mapped = mapped.with_columns(pl.lit(source.rating_max, pl.Float64).alias("rating_max"))
    mapped = mapped.with_columns(invalid_reason(mapped.collect_schema().names(), role, source).alias("__reject"))
    bad = mapped.filter(pl.col("__reject").is_not_null())
    for line, reason in bad.select(LINE, "__reject").iter_rows():
        rejects.append(Reject(line, reason, batch.raw_text(line)))
    kept = mapped.filter(pl.col("__reject").is_null())
    return canonical.conform(kept, role.table), rejects


MAX_ID_CHARS = 512
# Characters no id may hold: control characters (NUL, newlines, escapes) and line/paragraph separators.
_ID_CONTROL = r"[\p{Cc}\p{Zl}\p{Zp}]"
ID_COLUMNS = ("user_id", "item_id")


def invalid_reason(columns: Sequence[str], role: Role, source: Source) -> pl.Expr:
    """Per mapped row, why it cannot be kept (null where it can): a required column missing
    (``missing_<col>``), a blank id (``empty_<col>``), an id with control characters, too long or
    not of the source's form (``bad_<col>``), a rating off the source's scale (NaN and infinities
    included) and a time outside its range (``..._out_of_range``). The first that applies is given."""
    checks: list[tuple[pl.Expr, str]] = [(pl.col(c).is_null(), f"missing_{c}") for c in role.required]
    patterns = dict(source.id_patterns)
    for column in (c for c in ID_COLUMNS if c in columns):
        value = pl.col(column)
        bad = value.str.contains(_ID_CONTROL) | (value.str.len_chars() > MAX_ID_CHARS)
        if column in patterns:
            bad = bad | ~value.str.contains(f"^(?:{patterns[column]})$")
        checks += [(value.str.strip_chars() == "", f"empty_{column}"), (bad, f"bad_{column}")]
    if "rating" in columns and role.table == "interactions":
        rating = pl.col("rating")
        low = source.rating_min if source.rating_min is not None else float("-inf")
        high = source.rating_max if source.rating_max is not None else float("inf")
        checks.append(
            (rating.is_not_null() & ~(rating.is_finite() & rating.is_between(low, high)), "rating_out_of_range")
        )
    if "timestamp" in columns:
        start, end = source.time_range
        late_or_early = ~pl.col("timestamp").is_between(start, end, closed="left")
        checks.append((pl.col("timestamp").is_not_null() & late_or_early, "timestamp_out_of_range"))
    reason = pl.lit(None, pl.String)
    for condition, why in reversed(checks):
        reason = pl.when(condition.fill_null(False)).then(pl.lit(why)).otherwise(reason)
    return reason


def ingest(
    format: str,
    paths: Sequence[str | Path],
    out: str | Path,
    dataset: str | None = None,
    on_file: Callable[[Location], None] | None = None,
) -> IngestSummary:
    """Read ``paths`` (files or folders) as source ``format`` into canonical parquet under ``out``,
    holding ``out``'s lock."""
    source = get_source(format)
    files, skipped = resolve_files(source, paths, out, dataset)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"the output folder {shown(str(out), 200)} is a file")
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):
        return write_ingest(source, files, skipped, out, on_file)


def write_ingest(
    source: Source,
    files: Sequence[InputFile],
    skipped: list[str],
    out: Path,
    on_file: Callable[[Location], None] | None = None,
) -> IngestSummary:
    """Read resolved ``files`` into ``out``: the old summary goes first and the new one is written
    last, and on any error the rejects written so far are removed, so a failed ingest leaves no
    summary, no rejects file and no partial parquet."""
    summary = IngestSummary(format=source.name, skipped=skipped)
    for stale in ("summary.json", "rejects.jsonl"):
        (out / stale).unlink(missing_ok=True)
    rejects_tmp = out / "rejects.jsonl.tmp"
    try:
        with open(rejects_tmp, "w", encoding="utf-8") as rejects_file:
            for file in files:
                summary.files.append(_ingest_file(source, file, rejects_file))
                if on_file is not None:
                    on_file(file.path)
        rejects_tmp.replace(out / "rejects.jsonl")
    except BaseException:
        rejects_tmp.unlink(missing_ok=True)
        raise
    summary.dataset_warnings = missing_items([summary])
    write_text(json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n", out / "summary.json")
    return summary


def output_path(out: Path, table: str, dataset: str, path: PurePath) -> Path:
    """Where one input file's rows of ``table`` go: ``out/<table>/<dataset>/<file name>.parquet``."""
    return out / table / dataset / f"{path.name}.parquet"


def _ingest_file(source: Source, file: InputFile, rejects_file: TextIO) -> FileSummary:
    """Read one input file into its parquet, its rejects appended to ``rejects_file`` as JSON lines."""
    info = FileInfo(source=source.name, dataset=file.dataset, file=name_of(file.path))
    state = ReadState()

    def write_rejects(rejects: list[Reject]) -> None:
        for reject in rejects:
            record = {"file": str(file.path), "line": reject.line, "reason": reject.reason, "raw": reject.raw}
            rejects_file.write(json.dumps(record, ensure_ascii=False) + "\n")

    with AtomicParquetWriter(file.output, canonical.TABLES[file.role.table]) as writer:
        batches = file.role.reader(file.path, state)
        return read_batches(source, file.role, info, batches, state, writer.write, write_rejects, str(file.path))


def read_batches(
    source: Source,
    role: Role,
    info: FileInfo,
    batches: Iterable[RawBatch],
    state: ReadState,
    write_rows: Callable[[pl.DataFrame], None],
    write_rejects: Callable[[list[Reject]], None],
    file: str,
) -> FileSummary:
    """Map ``batches`` of the input ``file`` (all of it, or a block of its lines) to canonical rows
    for ``write_rows`` and rejects for ``write_rejects``; their accounting once the reader has filled
    ``state``, where every record read is kept or rejected (an error otherwise, before any output of
    the caller's is complete)."""
    reasons: Counter[str] = Counter()
    kept = 0
    for batch in batches:
        rows, rejects = canonical_batch(batch, role, info, source)
        write_rows(rows)
        kept += rows.height
        reasons.update(reject.reason for reject in rejects)
        write_rejects(rejects)
    rejected = sum(reasons.values())
    if state.records != kept + rejected:
        raise AssertionError(f"{file}: read {state.records} != kept {kept} + rejected {rejected}")
    return FileSummary(
        file=file,
        table=role.table,
        dataset=info.dataset,
        read=state.records,
        kept=kept,
        rejected=dict(sorted(reasons.items())),
        truncated=state.truncated,
        warning=state.warning,
    )
