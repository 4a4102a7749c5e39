"""Each source's terms as the source declares them, and the check that refuses to publish a
dataset holding sources whose terms forbid redistribution (Netflix Prize, MovieLens 100K / 1M /
10M / 20M / 25M, Yelp, ...).

The check reads every file that would be published (every file outside hidden folders, as the
upload sends them), ``eval/`` included:

- a benchmark's files, ``eval/<name>/...``, hold the data of the benchmark's source and dataset,
  which its ``summary.json`` records; a benchmark that records none cannot be vouched for;
- a parquet file elsewhere holds rows with ``source`` and ``dataset`` columns; one without them
  cannot be vouched for;
- a JSON-lines file elsewhere counts the ``source`` and ``dataset`` of its records (the instruction
  pairs); records without them are exports of the parquet tables (the pre-training text);
- other files (the card, licence, stats, manifest, report) describe the data and hold none of it.

What cannot be vouched for counts as restricted, so unknown data is never published unasked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recgpt_data.errors import UsageError
from recgpt_data.sources import get_source

UNKNOWN = "(unknown)"
EVAL = "eval"


@dataclass(frozen=True)
class SourceTerms:
    """What one (source, dataset) allows: its licence, whether it may be redistributed, its terms."""

    source: str
    dataset: str
    licence: str
    redistributable: bool
    terms: str


def terms_of(source: str, dataset: str) -> SourceTerms:
    """The declared terms of ``dataset`` of ``source``; a source with no declaration may not be shared."""
    try:
        declared = get_source(source)
    except (UsageError, ImportError):
        return SourceTerms(source, dataset, "other", False, "")
    return SourceTerms(source, dataset, declared.licence, declared.may_redistribute(dataset), declared.terms)


def published_files(folder: Path) -> list[Path]:
    """The files a publish of ``folder`` sends, sorted: all but those in hidden folders (runner state)."""
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.relative_to(folder).parts)
    )


def benchmark_sources(folder: Path, name: str) -> set[tuple[str, str]]:
    """The (source, dataset) of benchmark ``eval/<name>``, from its ``summary.json``; unknown where
    it records none."""
    summary = folder / EVAL / name / "summary.json"
    try:
        recorded = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = {}
    if not isinstance(recorded, dict) or not recorded.get("source") or not recorded.get("dataset"):
        return {(UNKNOWN, f"{EVAL}/{name} (no source recorded in its summary.json)")}
    return {(str(recorded["source"]), str(recorded["dataset"]))}


def file_sources(folder: Path, path: Path) -> set[tuple[str, str]]:
    """The (source, dataset) pairs whose data the published file ``path`` holds (see the module doc)."""
    relative = path.relative_to(folder)
    if relative.parts[0] == EVAL and len(relative.parts) > 2:
        return benchmark_sources(folder, relative.parts[1])
    try:
        if path.name.endswith(".parquet"):
            frame = pl.scan_parquet(path)
            if not {"source", "dataset"} <= set(frame.collect_schema().names()):
                return {(UNKNOWN, f"{relative} (no source and dataset columns)")}
            return set(frame.select("source", "dataset").unique().collect().iter_rows())
        if path.name.endswith(".jsonl"):
            schema = {"source": pl.String(), "dataset": pl.String()}
            return set(pl.scan_ndjson(path, schema=schema).unique().drop_nulls().collect().iter_rows())
    except pl.exceptions.PolarsError:
        return {(UNKNOWN, f"{relative} (unreadable)")}
    return set()


def folder_sources(folder: Path) -> list[tuple[str, str]]:
    """Every (source, dataset) whose data the published files of a built folder hold, sorted."""
    seen: set[tuple[str, str]] = set()
    for path in published_files(folder):
        seen |= file_sources(folder, path)
    return sorted(seen)


def restricted(folder: Path) -> list[SourceTerms]:
    """The sources in ``folder`` whose terms forbid redistribution (or that declare no terms, or
    whose data cannot be vouched for)."""
    return [t for t in (terms_of(s, d) for s, d in folder_sources(folder)) if not t.redistributable]


def refusal(found: list[SourceTerms]) -> str:
    """The message that explains why a folder may not be published."""
    lines = [
        "refusing to publish: the dataset holds data whose terms forbid redistribution",
        *(f"  {t.source} / {t.dataset}: {t.terms or 'no terms declared for this source'}" for t in found),
        "rebuild without these sources, or pass --allow-restricted if you hold the owners' permission "
        "(for example, a private repository for your own team where the terms allow it)",
    ]
    return "\n".join(lines)
