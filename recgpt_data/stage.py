"""The stage contract: a stage is a function of named lazy polars tables plus typed parameters.

A stage returns new tables, a :class:`StageStats` record and the :class:`Drops` that account for
every row it dropped and every value it changed, by reason. Stages are registered by name with
:func:`stage` (the modules of :mod:`recgpt_data.stages` and plugins find their way here through
:func:`recgpt_data.stages.get`); the runner looks them up by the names a pipeline spec gives,
validates their parameters, and owns all I/O around them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import polars as pl
from pydantic import BaseModel, ConfigDict

from recgpt_data.io.storage import Location
from recgpt_data.tokenizer import DEFAULT_NAME, DEFAULT_TOKENIZER


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
    """What a stage did: rows in and out per table, rows dropped and values changed, by reason (read
    off its :class:`Drops`), and ``info`` with anything else worth keeping; ``info["note"]`` is a line
    the run shows the user."""

    rows_in: dict[str, int] = field(default_factory=dict)
    rows_out: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def record(self, drops: Drops) -> None:
        """Add the drop and change counts of ``drops``."""
        for reason, n in drops.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + n
        for reason, n in drops.changed.items():
            self.changed[reason] = self.changed.get(reason, 0) + n

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


def blanked(frame: pl.DataFrame, column: str, reason: str) -> pl.DataFrame:
    """``frame``'s rows whose ``column`` a stage is about to blank, as :meth:`Drops.blank` and the
    runner's ``blanked_T`` tables keep them: their keys (:data:`BLANK_KEYS`), which column, its original value and the reason."""
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


def _by_table(parts: Mapping[str, list[pl.DataFrame | pl.LazyFrame]]) -> dict[str, pl.DataFrame | pl.LazyFrame]:
    """Each table's kept rows, concatenated in the order they were recorded."""
    return {name: pl.concat(frames, how="diagonal_relaxed") for name, frames in parts.items() if frames}


class Drops:
    """What library code dropped, blanked or changed, by reason: the one way a drop is recorded.

    Rows of a table (:meth:`add`, :meth:`keep`, :meth:`blank`) are counted and kept, each with its
    reason, for the runner's ``dropped_T`` and ``blanked_T`` tables; what is not a row of a table
    (a candidate window, a prompt) is counted alone (:meth:`count`), and so are values rewritten in
    place (:meth:`change`). A stage's :class:`StageOutput` reads its counts off its ``Drops``."""

    def __init__(self) -> None:
        self.dropped: Counter[str] = Counter()
        self.changed: Counter[str] = Counter()
        self._rows: dict[str, list[pl.DataFrame | pl.LazyFrame]] = {}
        self._blanks: dict[str, list[pl.DataFrame]] = {}

    def add(self, table: str, rows: pl.DataFrame | pl.LazyFrame, reason: str) -> None:
        """Count ``rows`` of ``table`` as dropped for ``reason`` and keep them."""
        self.dropped[reason] += count(rows)
        self._rows.setdefault(table, []).append(rows.with_columns(pl.lit(reason, dtype=pl.String).alias(DROP_REASON)))

    def add_tagged(self, table: str, rows: pl.DataFrame) -> None:
        """Count and keep rows of ``table`` that already carry their ``drop_reason``."""
        self.dropped.update(dict(rows.group_by(DROP_REASON).len().iter_rows()))
        self._rows.setdefault(table, []).append(rows)

    def keep(self, table: str, frame: pl.DataFrame, keep: pl.Series, reason: str) -> pl.DataFrame:
        """``frame``'s rows where ``keep`` holds; the others are dropped from ``table`` for ``reason``
        (a filter that drops nothing keeps its empty batch but counts no reason)."""
        gone = frame.filter(~keep)
        self._rows.setdefault(table, []).append(gone.with_columns(pl.lit(reason, dtype=pl.String).alias(DROP_REASON)))
        if gone.height:
            self.dropped[reason] += gone.height
        return frame.filter(keep)

    def count(self, reason: str, n: int) -> None:
        """Count ``n`` dropped things that are not rows of a table (windows, prompts) for ``reason``."""
        self.dropped[reason] += int(n)

    def change(self, reason: str, n: int) -> None:
        """Count ``n`` values changed in place (rewritten, cut) for ``reason``."""
        self.changed[reason] += int(n)

    def blank(self, table: str, rows: pl.DataFrame, column: str, reason: str, *, count_none: bool = True) -> None:
        """Count ``rows`` of ``table`` as having ``column`` blanked for ``reason`` and keep them;
        ``count_none=False`` leaves a reason that blanked nothing out of the counts (the empty batch
        is kept all the same)."""
        if rows.height or count_none:
            self.changed[reason] += rows.height
        self._blanks.setdefault(table, []).append(blanked(rows, column, reason))

    def update(self, other: Drops) -> None:
        """Add everything ``other`` recorded, after what this one holds."""
        self.dropped.update(other.dropped)
        self.changed.update(other.changed)
        for mine, theirs in ((self._rows, other._rows), (self._blanks, other._blanks)):
            for table, frames in theirs.items():
                mine.setdefault(table, []).extend(frames)

    def tables(self) -> dict[str, pl.DataFrame | pl.LazyFrame]:
        """The dropped rows, one frame per table, each row with its ``drop_reason``."""
        return _by_table(self._rows)

    def blanked_tables(self) -> dict[str, pl.DataFrame | pl.LazyFrame]:
        """The blanked rows, one frame per table (see :func:`blanked`)."""
        return _by_table(self._blanks)


@dataclass
class StageOutput:
    """The tables a stage produced (replacing same-named inputs downstream), its stats, and its
    :class:`Drops`, whose counts it adds to the stats so that every drop they count can be inspected."""

    tables: dict[str, pl.DataFrame | pl.LazyFrame]
    stats: StageStats
    drops: Drops = field(default_factory=Drops)

    def __post_init__(self) -> None:
        self.stats.record(self.drops)

    def to_write(self) -> dict[str, pl.DataFrame | pl.LazyFrame]:
        """Every table the runner writes: the outputs, then each table's dropped rows as ``dropped_T``
        and its blanked rows (see :func:`blanked`) as ``blanked_T``."""
        return {
            **self.tables,
            **{f"{DROPPED}{name}": frame for name, frame in self.drops.tables().items()},
            **{f"{BLANKED}{name}": frame for name, frame in self.drops.blanked_tables().items()},
        }


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


StageFn = Callable[[Mapping[str, pl.LazyFrame], Any, Context], StageOutput]

T = TypeVar("T")
R = TypeVar("R")
Mapper = Callable[[Callable[[T], R], Sequence[T]], Iterable[R]]


@dataclass(frozen=True)
class TaskFolders:
    """Where a prepare step's tasks exchange files, local paths or object-store URLs: ``scratch``
    (files they write for one another), ``out_dir`` (files of the final folder, staged until the
    stage succeeds) and ``folder`` (the final folder as earlier stages left it). Tasks write there
    through :func:`~recgpt_data.io.storage.local_file` and read through
    :func:`~recgpt_data.io.storage.fetched` (or polars, which reads URLs)."""

    scratch: Location
    out_dir: Location
    folder: Location


@dataclass(frozen=True)
class Preparation:
    """What a stage's ``prepare`` step works on: each input table's files, bucket by bucket
    (``buckets[name][i]`` are bucket ``i``'s files; a table without the bucket column, and every
    table of a whole stage, is one entry read whole), the stage's scratch folder for the files it
    writes, and ``map``, which runs a picklable function over tasks on the run's engine (in worker
    processes or on Ray) and yields the results in any order. The driver only plans: every table is
    read inside ``map``'s tasks.

    ``scratch`` is on the driver's disk. A stage registered with ``prepare_anywhere`` has its tasks
    exchange files only through :meth:`task_folders`: with a local output its scratch and the
    context's folders; with the output in object storage, prefixes of the store (``in_store``), so
    that ``map`` places its tasks on any node of a cluster."""

    buckets: Mapping[str, tuple[tuple[str, ...], ...]]
    bucketed: Mapping[str, bool]
    scratch: Path
    map: Mapper
    in_store: TaskFolders | None = None

    def task_folders(self, ctx: Context) -> TaskFolders:
        """Where this step's tasks exchange files: the store's prefixes (``in_store``) where the
        executor lent them, else the driver's scratch and the context's folders."""
        if self.in_store is not None:
            return self.in_store
        return TaskFolders(self.scratch, ctx.out_dir, ctx.folder or ctx.out_dir)


@dataclass(frozen=True)
class Prepared:
    """What a ``prepare`` step made: tables (name -> files it wrote in its scratch) that every bucket
    (or the whole stage) then reads whole beside its own inputs (with the output in object storage,
    the executor uploads them for buckets on other nodes), and counters merged into the stage's
    stats ``info``. ``outputs`` are tables of the stage's own output that its tasks wrote whole
    (name -> files, such as a table without the bucket column); the executor moves them into the
    stage's folder beside the buckets' tables, and adds ``stats`` (a :meth:`StageStats.to_dict` of
    what they hold)."""

    tables: Mapping[str, tuple[str, ...]]
    info: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    stats: Mapping[str, Any] = field(default_factory=dict)


PrepareFn = Callable[[Preparation, Any, Context], Prepared]


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
    carries at its top level too (the report's ``corpus``). ``prepare`` runs once before the
    stage's function, its heavy work in tasks on the run's engine: before the buckets of a
    partitioned stage, for work that spans buckets (deduplication's clustering), and before a whole
    stage, for work that splits another way than by buckets (ingest's input files, the corpus'
    shards); see :class:`Preparation`. The tables it returns are read whole by every bucket, or by
    the whole stage, beside their inputs. ``prepare_anywhere`` says its prepare step's tasks use
    only the shared locations of their :class:`Preparation`, never the driver's disk, so they run
    on any node also with the output in object storage."""

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
    prepare: PrepareFn | None = None
    prepare_anywhere: bool = False


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
    prepare: PrepareFn | None = None,
    prepare_anywhere: bool = False,
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
            name,
            fn,
            params,
            reads,
            writes,
            version,
            optional_reads,
            partition,
            summarises,
            heuristic,
            settings,
            stats_keys,
            prepare,
            prepare_anywhere,
        )
        return fn

    return register


def count(frame: pl.DataFrame | pl.LazyFrame) -> int:
    """Row count of an eager or lazy frame."""
    if isinstance(frame, pl.LazyFrame):
        return int(frame.select(pl.len()).collect().item())
    return frame.height
