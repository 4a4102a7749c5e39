"""Each source's terms as the source declares them, and the check that refuses to publish a
dataset holding sources whose terms forbid redistribution (Netflix Prize, MovieLens 100K / 1M /
10M / 20M / 25M, Yelp, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recgpt_data.errors import UsageError
from recgpt_data.sources import get_source


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


def folder_sources(folder: Path) -> list[tuple[str, str]]:
    """Every (source, dataset) in the parquet files of a built folder, sorted."""
    seen: set[tuple[str, str]] = set()
    for path in sorted(folder.rglob("*.parquet")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        frame = pl.scan_parquet(path)
        if {"source", "dataset"} <= set(frame.collect_schema().names()):
            seen.update(frame.select("source", "dataset").unique().collect().iter_rows())
    return sorted(seen)


def restricted(folder: Path) -> list[SourceTerms]:
    """The sources in ``folder`` whose terms forbid redistribution (or that declare no terms)."""
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
