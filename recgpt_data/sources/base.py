"""What a source is: a declaration of its files, how to read them, and how its fields map onto the
canonical schema, plus RecGPT's rendering template for it.

A source module declares one :class:`Source`; the ingest driver (``recgpt_data.ingest``) does the
streaming, rejecting, counting and writing for all of them alike.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import polars as pl

from recgpt_data.io.storage import Location
from recgpt_data.io.streams import COMPRESSION_SUFFIXES

LINE = "__line"  # column every reader adds: 1-based line / record number in the file
# Times no source can hold: before the web's first ratings, or decades ahead. A source may narrow them.
TIME_RANGE = (datetime(1990, 1, 1, tzinfo=UTC), datetime(2040, 1, 1, tzinfo=UTC))
# Epoch values are clipped to this many seconds either side of 1970 before conversion, so a huge
# value (int64 max) lands outside TIME_RANGE and is rejected instead of wrapping round to 1969.
_EPOCH_LIMIT_S = 10**11
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000}


@dataclass(frozen=True)
class Reject:
    """One input record that could not be kept, with where it was and why."""

    line: int
    reason: str
    raw: str


@dataclass
class RawBatch:
    """A batch of parsed records with raw (source) column names plus :data:`LINE`, the records
    of the same stretch of input that failed to parse, and a way back to each record's raw text."""

    frame: pl.DataFrame
    rejects: list[Reject]
    raw_text: Callable[[int], str]


@dataclass
class ReadState:
    """Per-file facts a reader reports after iterating: records read, and whether the file was cut."""

    records: int = 0
    truncated: bool = False
    warning: str | None = None


class Reader(Protocol):
    """Turns one raw file (a local path or an object's URL) into :class:`RawBatch` es, filling
    ``state`` as it goes."""

    def __call__(self, path: Location, state: ReadState) -> Iterator[RawBatch]: ...


@dataclass(frozen=True)
class FileInfo:
    """Where a batch came from, for ingest to stamp onto its canonical rows."""

    source: str
    dataset: str
    file: str


FieldMapping = Callable[[pl.DataFrame], pl.DataFrame]
"""A role's column mapping: one raw batch to the role's canonical columns."""


@dataclass(frozen=True)
class Role:
    """One kind of file of a source: which files (globs on the file name without its compression
    suffix, so ``meta_*.json`` takes ``meta_x.json.gz`` but never ``meta_x.json.parquet``), the
    canonical table they fill, how to read them, how their columns map, which canonical columns must
    be non-null, and ``sniff``: a look at the first records that says why a file is of another
    format (``None`` where it fits)."""

    table: str
    patterns: tuple[str, ...]
    reader: Reader
    mapping: FieldMapping
    required: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    sniff: Callable[[Location], str | None] | None = None

    def matches(self, name: str) -> bool:
        base = uncompressed_name(name)
        return any(fnmatch.fnmatchcase(base, p) for p in self.patterns) and not any(
            fnmatch.fnmatchcase(base, p) for p in self.exclude
        )


def uncompressed_name(name: str) -> str:
    """A file name without its compression suffix (``.gz``, ``.bz2``, ``.zst``)."""
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def from_epoch(column: str, unit: str) -> pl.Expr:
    """Epoch ``column`` (``s``, ``ms`` or ``us``) as a UTC time; values far outside any plausible
    time are clipped first, so that they fail the time range check rather than overflow."""
    limit = _EPOCH_LIMIT_S * _PER_SECOND[unit]
    return pl.from_epoch(pl.col(column).clip(-limit, limit), time_unit=unit).dt.replace_time_zone("UTC")


@dataclass(frozen=True)
class Template:
    """How RecGPT writes a user's items for a source: the noun in the header, the fields of a
    pre-training line in order, and the fields of a next-item line."""

    noun: str
    fields: tuple[str, ...]
    response_fields: tuple[str, ...]
    rating_pairs: bool = True


@dataclass(frozen=True)
class Source:
    """A source format: its file roles, how a file names its dataset, its rating scale and the
    RecGPT template (with per-dataset overrides keyed by a regex on the dataset name).

    What a kept value must be: a rating within ``[rating_min, rating_max]`` (finite), a time within
    ``time_range``, and ids that match ``id_patterns`` (canonical column -> regex) where the source
    fixes their form (numeric ids); every id is also non-blank, without control characters and at
    most ``MAX_ID_CHARS`` long."""

    name: str
    roles: tuple[Role, ...]
    dataset: Callable[[Path], str]
    rating_max: float | None
    template: Template
    rating_min: float | None = None
    time_range: tuple[datetime, datetime] = TIME_RANGE
    id_patterns: tuple[tuple[str, str], ...] = ()
    template_overrides: tuple[tuple[str, Template], ...] = ()
    redistributable: bool = True
    terms: str = ""
    licence: str = "other"
    redistributable_dataset: Callable[[str], bool] | None = None  # where terms differ per dataset

    def roles_for(self, path: Path) -> tuple[Role, ...]:
        """The roles of the file at ``path``, empty if this source does not read it. A file can
        fill more than one table (HotelRec's reviews also name the hotels)."""
        return tuple(role for role in self.roles if role.matches(path.name))

    def may_redistribute(self, dataset: str) -> bool:
        """Whether the terms of ``dataset`` allow publishing it (per dataset where the source says so)."""
        if self.redistributable_dataset is not None:
            return self.redistributable_dataset(dataset)
        return self.redistributable

    def template_for(self, dataset: str) -> Template:
        """The template for ``dataset`` (an override whose regex matches, else the default)."""
        for pattern, template in self.template_overrides:
            if re.search(pattern, dataset):
                return template
        return self.template


def strip_name(path: Path, prefixes: tuple[str, ...] = (), suffixes: tuple[str, ...] = ()) -> str:
    """A file's name without compression and format extensions, and without the given
    prefixes and suffixes: ``reviews_Digital_Music_5.json.gz`` -> ``Digital_Music``."""
    name = uncompressed_name(path.name)
    name = re.sub(r"\.(jsonl?|csv|txt|dat|tsv)$", "", name)
    for prefix in prefixes:
        if name.startswith(prefix):
            name = name[len(prefix) :]
    for suffix in suffixes:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name
