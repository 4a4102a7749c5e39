"""Stage ``ingest``: every declared source read into the canonical tables (:mod:`recgpt_data.ingest`),
optionally a sample of its users (:mod:`recgpt_data.sampling`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl
from pydantic import Field, field_validator

from recgpt_data import schema as canonical
from recgpt_data.ingest import IngestSummary, missing_items, read_rejects, resolve_files, write_ingest
from recgpt_data.io.storage import localise
from recgpt_data.names import DatasetName
from recgpt_data.pipeline.spec import resolve_input
from recgpt_data.sampling import split_sample
from recgpt_data.sources import get_source
from recgpt_data.stage import Context, Drops, Params, RawPath, StageOutput, StageStats, stage


class SourceSpec(Params):
    """One source of an ingest stage: a format and its files or folders."""

    format: str
    paths: list[RawPath]
    dataset: DatasetName | None = None
    enabled: bool = True  # false (or a var that says so) leaves an optional source out


class IngestParams(Params):
    """The sources to read, and the share of users to keep (all by default)."""

    sources: list[SourceSpec]
    sample: float | None = Field(default=None, gt=0, le=1)  # keep this fraction of users (recgpt_data.sampling)

    @field_validator("sources")
    @classmethod
    def enabled_only(cls, sources: list[SourceSpec]) -> list[SourceSpec]:
        """The sources switched on: a disabled one is neither read nor part of the fingerprint."""
        return [s for s in sources if s.enabled]

    def datasets_made(self) -> tuple[str, ...]:
        """Each source's dataset where it names one, else its format (all of that source's datasets)."""
        return tuple(s.dataset or s.format for s in self.sources)


def as_declared(file: str, roots: Sequence[tuple[Path, str]]) -> str:
    """``file``, found under one of a source's ``(resolved, declared)`` paths, named from the path as
    the spec declares it (``demo:amazon2018/...``, ``../data/...``), so that the stats of the same
    spec read the same on every machine."""
    for resolved, declared in roots:
        if Path(file).is_relative_to(resolved):
            relative = Path(file).relative_to(resolved).as_posix()
            return declared if relative == "." else f"{declared.rstrip('/')}/{relative}"
    return file


def declared_summary(summary: IngestSummary, roots: Sequence[tuple[Path, str]]) -> dict:
    """``summary`` as ``stats.json`` keeps it, with every file named as the spec declares it."""
    record = summary.to_dict()
    for item in record["files"]:
        item["file"] = as_declared(item["file"], roots)
    record["skipped"] = [as_declared(file, roots) for file in record["skipped"]]
    return record


@stage("ingest", params=IngestParams, writes=("interactions", "items"), version="1")
def ingest_stage(tables: Mapping[str, pl.LazyFrame], params: IngestParams, ctx: Context) -> StageOutput:
    """Read every declared source into the canonical tables; rejects are counted as drops."""
    stats = StageStats()
    summaries = []
    read: list[IngestSummary] = []
    drops = Drops()
    for index, spec in enumerate(params.sources):
        raw = ctx.scratch / "raw"  # where inputs on an object store are copied to be read
        roots = [
            (localise(resolve_input(p, ctx.spec_dir), raw / f"{index:02d}-{i:02d}"), p)
            for i, p in enumerate(spec.paths)
        ]
        paths = [resolved for resolved, _ in roots]
        out = ctx.scratch / f"{index:02d}-{spec.format}"
        source = get_source(spec.format)
        files, skipped = resolve_files(source, paths, out, spec.dataset)
        out.mkdir(parents=True, exist_ok=True)
        summary = write_ingest(source, files, skipped, out)
        summaries.append(declared_summary(summary, roots))
        read.append(summary)
        stats.rows_in[spec.format] = stats.rows_in.get(spec.format, 0) + summary.read
        drops.add_tagged("raw", read_rejects(out / "rejects.jsonl", spec.format))
    stats.info["sources"] = summaries
    stats.info["warnings"] = [f.warning for s in read for f in s.files if f.warning] + missing_items(read)
    frames = {}
    for table in ("interactions", "items"):
        files = sorted(ctx.scratch.glob(f"*/{table}/**/*.parquet"))
        frames[table] = pl.concat([pl.scan_parquet(f) for f in files]) if files else canonical.empty(table).lazy()
    if params.sample is not None:
        frames["interactions"], sampled_out = split_sample(frames["interactions"], params.sample, ctx.seed)
        drops.update(sampled_out)
        stats.info["sample"] = params.sample
    return StageOutput(frames, stats, drops)
