"""Ingest: stream raw dumps of one source format into the canonical parquet tables.

``ingest(format, paths, out)`` writes ``out/interactions/<dataset>/<file>.parquet`` and
``out/items/<dataset>/<file>.parquet`` (one file per input file, row groups per batch, so memory
stays flat), every rejected record to ``out/rejects.jsonl`` (file, line, reason, raw text), and
``out/summary.json``, whose counts account for every input record: read = kept + rejected.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl
from pydantic import field_validator

from recgpt_data import schema as canonical
from recgpt_data.errors import UsageError
from recgpt_data.io.parquet import AtomicParquetWriter, write_text
from recgpt_data.pipeline.spec import resolve_path
from recgpt_data.sources import get_source
from recgpt_data.sources.base import LINE, FileInfo, RawBatch, ReadState, Reject, Role, Source
from recgpt_data.stage import DROP_REASON, Context, Params, StageOutput, StageStats, stage


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
        return [f.warning for f in self.files if f.warning]

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


def resolve_files(source: Source, paths: Sequence[str | Path]) -> tuple[list[tuple[Path, Role]], list[str]]:
    """The files under ``paths`` that ``source`` reads, in a stable order, and those it skips.

    A named file that does not exist, or that the source cannot read, is an error; inside a folder,
    files the source does not read (READMEs, genre lists) are skipped and listed."""
    chosen: list[tuple[Path, Role]] = []
    skipped: list[str] = []
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise UsageError(f"no such file or folder: {path}")
        if path.is_file():
            roles = source.roles_for(path)
            if not roles:
                raise UsageError(f"{path.name} is not a {source.name} file this reader knows")
            chosen.extend((path, role) for role in roles)
            continue
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            roles = source.roles_for(child)
            if not roles:
                skipped.append(str(child))
            chosen.extend((child, role) for role in roles)
    if not chosen:
        raise UsageError(f"no {source.name} files found in: {', '.join(map(str, paths))}")
    return chosen, skipped


def canonical_batch(batch: RawBatch, role: Role, info: FileInfo, source: Source) -> tuple[pl.DataFrame, list[Reject]]:
    """Map a raw batch to canonical rows; rows missing a required field become rejects."""
    rejects = list(batch.rejects)
    if not batch.frame.height:
        return canonical.empty(role.table), rejects
    mapped = role.mapping(batch.frame, info).with_columns(
        pl.lit(info.source).alias("source"),
        pl.lit(info.dataset).alias("dataset"),
        pl.lit(info.file).alias("src_file"),
        pl.col(LINE).alias("src_line"),
    )
    if role.table == "interactions" and "rating_max" not in mapped.columns:
        mapped = mapped.with_columns(pl.lit(source.rating_max, pl.Float64).alias("rating_max"))
    missing = pl.lit(None, pl.String)
    for column in reversed(role.required):
        missing = pl.when(pl.col(column).is_null()).then(pl.lit(f"missing_{column}")).otherwise(missing)
    mapped = mapped.with_columns(missing.alias("__reject"))
    bad = mapped.filter(pl.col("__reject").is_not_null())
    for line, reason in bad.select(LINE, "__reject").iter_rows():
        rejects.append(Reject(line, reason, batch.raw_text(line)))
    kept = mapped.filter(pl.col("__reject").is_null())
    return canonical.conform(kept, role.table), rejects


def ingest(
    format: str,
    paths: Sequence[str | Path],
    out: str | Path,
    dataset: str | None = None,
    on_file: Callable[[Path], None] | None = None,
) -> IngestSummary:
    """Read ``paths`` (files or folders) as source ``format`` into canonical parquet under ``out``."""
    source = get_source(format)
    files, skipped = resolve_files(source, paths)
    out = Path(out)
    summary = IngestSummary(format=source.name, skipped=skipped)
    out.mkdir(parents=True, exist_ok=True)
    rejects_tmp = out / "rejects.jsonl.tmp"
    with open(rejects_tmp, "w", encoding="utf-8") as rejects_file:
        for path, role in files:
            summary.files.append(_ingest_file(source, path, role, out, dataset, rejects_file))
            if on_file is not None:
                on_file(path)
    rejects_tmp.replace(out / "rejects.jsonl")
    write_text(json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n", out / "summary.json")
    return summary


def output_path(out: Path, table: str, dataset: str, path: Path) -> Path:
    """Where one input file's rows of ``table`` go: ``out/<table>/<dataset>/<file name>.parquet``."""
    return out / table / dataset / f"{path.name}.parquet"


def _ingest_file(source: Source, path: Path, role: Role, out: Path, dataset: str | None, rejects_file) -> FileSummary:
    name = dataset or source.dataset(path)
    info = FileInfo(source=source.name, dataset=name, file=path.name, path=path)
    summary = FileSummary(file=str(path), table=role.table, dataset=name)
    state = ReadState()
    reasons: Counter[str] = Counter()
    writer = AtomicParquetWriter(output_path(out, role.table, name, path), canonical.TABLES[role.table])
    try:
        for batch in role.reader(path, state):
            rows, rejects = canonical_batch(batch, role, info, source)
            writer.write(rows)
            for reject in rejects:
                reasons[reject.reason] += 1
                rejects_file.write(
                    json.dumps(
                        {"file": str(path), "line": reject.line, "reason": reject.reason, "raw": reject.raw},
                        ensure_ascii=False,
                    )
                    + "\n"
                )
    finally:
        writer.close()
    summary.read = state.records
    summary.kept = writer.rows
    summary.rejected = dict(sorted(reasons.items()))
    summary.truncated = state.truncated
    summary.warning = state.warning
    if summary.read != summary.kept + sum(reasons.values()):
        raise AssertionError(f"{path}: read {summary.read} != kept {summary.kept} + rejected {sum(reasons.values())}")
    return summary


class SourceSpec(Params):
    """One source of an ingest stage: a format and its files or folders."""

    format: str
    paths: list[str]
    dataset: str | None = None
    enabled: bool = True  # false (or a var that says so) leaves an optional source out


class IngestParams(Params):
    sources: list[SourceSpec]

    @field_validator("sources")
    @classmethod
    def enabled_only(cls, sources: list[SourceSpec]) -> list[SourceSpec]:
        """The sources switched on: a disabled one is neither read nor part of the fingerprint."""
        return [s for s in sources if s.enabled]


@stage("ingest", params=IngestParams, writes=("interactions", "items"), version="1")
def ingest_stage(tables: dict, params: IngestParams, ctx: Context) -> StageOutput:
    """Read every declared source into the canonical tables; rejects are counted as drops."""
    stats = StageStats()
    summaries = []
    rejects = []
    for index, spec in enumerate(params.sources):
        paths = [resolve_path(p, ctx.spec_dir) for p in spec.paths]
        out = ctx.scratch / f"{index:02d}-{spec.format}"
        summary = ingest(spec.format, paths, out, spec.dataset)
        summaries.append(summary.to_dict())
        stats.rows_in[spec.format] = stats.rows_in.get(spec.format, 0) + summary.read
        for reason, n in summary.rejected.items():
            stats.drop(f"{spec.format}:{reason}", n)
        rejects.append(read_rejects(out / "rejects.jsonl", spec.format))
    stats.info["sources"] = summaries
    frames = {}
    for table in ("interactions", "items"):
        files = sorted(ctx.scratch.glob(f"*/{table}/**/*.parquet"))
        frames[table] = pl.concat([pl.scan_parquet(f) for f in files]) if files else canonical.empty(table).lazy()
    return StageOutput(frames, stats, dropped={"raw": pl.concat(rejects)})


REJECT_SCHEMA = {"file": pl.String(), "line": pl.Int64(), "reason": pl.String(), "raw": pl.String()}


def read_rejects(path: Path, format: str) -> pl.DataFrame:
    """An ingest's rejects file as rows (file, line, raw text) with ``drop_reason`` as the stage
    counts it (``format:reason``)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    frame = pl.DataFrame(rows, schema=REJECT_SCHEMA)
    return frame.select(
        "file", "line", "raw", (pl.lit(f"{format}:") + pl.col("reason")).alias(DROP_REASON)
    )
