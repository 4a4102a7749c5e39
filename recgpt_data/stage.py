"""The stage contract: a stage is a function of named polars tables plus typed parameters.

A stage returns new tables and a :class:`StageStats` record that accounts for every row it dropped or
changed, by reason. Stages are registered by name with :func:`stage`; the runner looks them up by
the names a pipeline spec gives, validates their parameters, and owns all I/O around them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import polars as pl
from pydantic import BaseModel, ConfigDict

from recgpt_data.tokenizer import DEFAULT_NAME, DEFAULT_TOKENIZER

Frame = pl.DataFrame | pl.LazyFrame


class Params(BaseModel):
    """Base of every stage's parameters: unknown keys in a spec are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def datasets_needed(self) -> tuple[str, ...]:
        """The canonical datasets these parameters name that an ingest source must produce (a
        benchmark's dataset); the planner refuses a spec where no source can."""
        return ()

    def datasets_made(self) -> tuple[str, ...]:
        """The datasets a stage with these parameters reads in from raw files: full names, or a
        source's name standing for every dataset of that source."""
        return ()


@dataclass(frozen=True)
class RawPathField:
    """Marks a parameter that names raw files or folders (relative to the spec file, or ``demo:``):
    the fingerprint hashes the content of every file it names, and no other parameter's."""


RawPath = Annotated[str, RawPathField()]  # a parameter type: ``paths: list[RawPath]``


@dataclass
class StageStats:
    """What a stage did: rows in and out per table, rows dropped and values changed, by reason, and
    ``info`` with anything else worth keeping; ``info["note"]`` is a line the run shows the user."""

    rows_in: dict[str, int] = field(default_factory=dict)
    rows_out: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def drop(self, reason: str, count: int) -> None:
        """Count ``count`` rows dropped for ``reason``."""
        self.dropped[reason] = self.dropped.get(reason, 0) + int(count)

    def change(self, reason: str, count: int) -> None:
        """Count ``count`` values changed (blanked, rewritten, cut) for ``reason``."""
        self.changed[reason] = self.changed.get(reason, 0) + int(count)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dropped": dict(sorted(self.dropped.items())),
            "changed": dict(sorted(self.changed.items())),
            "info": self.info,
        }


DROP_REASON = "drop_reason"
DROPPED = "dropped_"  # the runner keeps the rows a stage dropped from table T as table "dropped_T"
BLANK_REASON = "blank_reason"
BLANKED = "blanked_"  # ... and the rows whose value a stage blanked in table T as table "blanked_T"
BLANK_KEYS = ("source", "dataset", "user_id", "item_id", "timestamp", "src_file", "src_line")  # kept with them


@dataclass
class StageOutput:
    """The tables a stage produced (replacing same-named inputs downstream), its stats, and the rows
    it dropped from its input tables, by table, each row with its ``drop_reason`` (see
    :func:`removed`), so that every drop the stats count can be inspected."""

    tables: dict[str, Frame]
    stats: StageStats
    dropped: dict[str, Frame] = field(default_factory=dict)
    blanked: dict[str, Frame] = field(default_factory=dict)

    def to_write(self) -> dict[str, Frame]:
        """Every table the runner writes: the outputs, then each table's dropped rows as ``dropped_T``
        and its blanked rows (see :func:`blanked`) as ``blanked_T``."""
        return {
            **self.tables,
            **{f"{DROPPED}{name}": frame for name, frame in self.dropped.items()},
            **{f"{BLANKED}{name}": frame for name, frame in self.blanked.items()},
        }


def removed(frame: pl.DataFrame, reason: str) -> pl.DataFrame:
    """``frame``'s rows tagged with the reason they were dropped, for :attr:`StageOutput.dropped`."""
    return frame.with_columns(pl.lit(reason, dtype=pl.String).alias(DROP_REASON))


def blanked(frame: pl.DataFrame, column: str, reason: str) -> pl.DataFrame:
    """``frame``'s rows whose ``column`` a stage is about to blank, as :attr:`StageOutput.blanked`
    keeps them: their keys (:data:`BLANK_KEYS`), which column, its original value and the reason."""
    keys = [c for c in BLANK_KEYS if c in frame.columns]
    return frame.select(
        *keys,
        pl.lit(column, dtype=pl.String).alias("blanked_column"),
        pl.col(column).cast(pl.String).alias("original"),
        pl.lit(reason, dtype=pl.String).alias(BLANK_REASON),
    )


def changes_by_dataset(frame: pl.DataFrame, changed: Mapping[str, pl.Expr]) -> dict[str, dict[str, Any]]:
    """``info["by_dataset"]`` of a stage that changes values: per dataset of ``frame``, its rows and
    how many of them each reason's mask marks, for the runner's warnings on heuristic rules (empty
    for a frame without a ``dataset`` column)."""
    if "dataset" not in frame.columns:
        return {}
    counts = (
        frame.group_by("dataset")
        .agg(pl.len().alias("rows"), *[mask.sum().alias(reason) for reason, mask in changed.items()])
        .sort("dataset")
    )
    return {
        row["dataset"]: {"rows": row["rows"], "changed": {reason: row[reason] for reason in changed}}
        for row in counts.iter_rows(named=True)
    }


def dropped_tables(parts: Mapping[str, list[pl.DataFrame]]) -> dict[str, pl.DataFrame]:
    """Each table's dropped rows, concatenated in the order they were dropped."""
    return {name: pl.concat(frames, how="diagonal_relaxed") for name, frames in parts.items() if frames}


class Drops:
    """The rows a stage drops as it goes: each batch counted in its stats under its reason and kept,
    by table, with its ``drop_reason`` for :attr:`StageOutput.dropped`; likewise the rows whose
    value it blanks, for :attr:`StageOutput.blanked`."""

    def __init__(self, stats: StageStats):
        self.stats = stats
        self.rows: dict[str, list[pl.DataFrame]] = {}
        self.blanks: dict[str, list[pl.DataFrame]] = {}

    def add(self, table: str, rows: pl.DataFrame, reason: str) -> None:
        """Count ``rows`` of ``table`` as dropped for ``reason`` and keep them."""
        self.stats.drop(reason, rows.height)
        self.rows.setdefault(table, []).append(removed(rows, reason))

    def tables(self) -> dict[str, pl.DataFrame]:
        """The kept rows, one frame per table."""
        return dropped_tables(self.rows)

    def blank(self, table: str, rows: pl.DataFrame, column: str, reason: str) -> None:
        """Count ``rows`` of ``table`` as having ``column`` blanked for ``reason`` and keep them."""
        self.stats.change(reason, rows.height)
        self.blanks.setdefault(table, []).append(blanked(rows, column, reason))

    def blanked_tables(self) -> dict[str, pl.DataFrame]:
        """The kept blanked rows, one frame per table."""
        return dropped_tables(self.blanks)


@dataclass(frozen=True)
class Context:
    """What the runner lends a stage besides tables: the pipeline seed and, for edge stages that
    read raw files or write the final folder, the spec's folder and the output folder.

    ``out_dir`` is where a stage writes files of the final folder (the runner stages them and moves
    them into place once the stage succeeds); ``folder`` is the final folder as earlier stages left
    it, and ``stages`` their stats, for the stages that summarise a run (report, card).
    ``partition`` is ``(index, count)`` when the stage runs on one user bucket of ``count``.
    ``tokenizer`` is the spec-wide tokenizer file, resolved relative to the spec file (default: the
    bundled GPT-NeoX-20B), and ``tokenizer_name`` how manifests name it (see
    :class:`recgpt_data.pipeline.planner.Settings`); a stage that uses them declares
    ``settings=("tokenizer",)`` so that its fingerprint covers the file's content."""

    seed: int = 0
    spec_dir: Path = Path(".")
    out_dir: Path = Path("out")
    scratch: Path = Path("out/.scratch")
    folder: Path | None = None
    stages: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    partition: tuple[int, int] | None = None
    tokenizer: Path = DEFAULT_TOKENIZER
    tokenizer_name: str = DEFAULT_NAME


StageFn = Callable[[Mapping[str, Frame], Any, Context], StageOutput]


PARTITION_USER = "user"
PARTITION_DATASET = "dataset"
PARTITION_COLUMNS = {PARTITION_USER: "user_id", PARTITION_DATASET: "dataset"}  # what buckets are cut by


@dataclass(frozen=True)
class StageDef:
    """A registered stage: its function, parameter model, the tables it reads and writes, and a
    code version that changes whenever its output for the same input would change.

    ``optional_reads`` are tables passed when an earlier stage wrote them. ``partition="user"``
    says the stage may run on each user bucket alone (every table it reads that has a ``user_id``
    column is cut to the bucket; others come whole) and returns rows only for the users it was
    given, so the runner may run the buckets anywhere and concatenate them in bucket order.
    ``partition="dataset"`` is the same with buckets of whole datasets, cut by the ``dataset``
    column, for stages whose work spans users but never datasets (such as deduplication).
    ``summarises`` says it reads the folder built so far and every earlier stage's stats, so it
    depends on all earlier stages. ``heuristic`` says every row it drops and every value it changes
    is a judgement call (duplicate detection, language identification), not a rule of the corpus:
    the runner warns where such a stage removes more than a few percent of a dataset.
    ``settings`` names the spec-wide settings (:data:`SETTINGS`) it uses from its :class:`Context`;
    its fingerprint covers them. ``stats_keys`` names keys of its stats' ``info`` that ``stats.json``
    carries at its top level too (the report's ``corpus``)."""

    name: str
    fn: StageFn
    params: type[Params]
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    version: str
    optional_reads: tuple[str, ...] = ()
    partition: str | None = None
    summarises: bool = False
    heuristic: bool = False
    settings: tuple[str, ...] = ()
    stats_keys: tuple[str, ...] = ()


SETTINGS = ("tokenizer",)  # the spec-wide settings a stage may declare it uses
REGISTRY: dict[str, StageDef] = {}


def stage(
    name: str,
    *,
    params: type[Params],
    reads: tuple[str, ...] = (),
    writes: tuple[str, ...] = (),
    version: str = "1",
    optional_reads: tuple[str, ...] = (),
    partition: str | None = None,
    summarises: bool = False,
    heuristic: bool = False,
    settings: tuple[str, ...] = (),
    stats_keys: tuple[str, ...] = (),
) -> Callable[[StageFn], StageFn]:
    """Register ``fn`` as the stage ``name`` (see :class:`StageDef` for the options)."""
    if partition is not None and partition not in PARTITION_COLUMNS:
        raise ValueError(f"stage {name!r}: partition must be None or one of {sorted(PARTITION_COLUMNS)}")
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise ValueError(f"stage {name!r}: unknown settings {unknown}; known: {', '.join(SETTINGS)}")

    def register(fn: StageFn) -> StageFn:
        if name in REGISTRY:
            raise ValueError(f"stage {name!r} is registered twice")
        REGISTRY[name] = StageDef(
            name, fn, params, reads, writes, version, optional_reads, partition, summarises, heuristic, settings,
            stats_keys,
        )
        return fn

    return register


def get(name: str) -> StageDef:
    """The registered stage ``name``, with a clear error listing the known ones."""
    from recgpt_data import stages  # noqa: F401  (registers every stage)

    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def count(frame: Frame) -> int:
    """Row count of an eager or lazy frame."""
    if isinstance(frame, pl.LazyFrame):
        return int(frame.select(pl.len()).collect().item())
    return frame.height
