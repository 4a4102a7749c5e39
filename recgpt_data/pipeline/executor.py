"""The executor: runs one stage on its input tables on an engine, whole as one task or bucket by
bucket, the tasks writing its tables into the store (:func:`recgpt_data.pipeline.store.write_tables`,
the one table writer, for both); the driver holds plans and the tasks' small records, never a table.

A partitioned stage's input tables that have its bucket column are cut into buckets (an earlier
stage's own parts where it wrote the same buckets, else cut once and kept beside that stage's
tables); every finished bucket is recorded at once, so a killed stage resumes with the buckets it
had not finished.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

import polars as pl

from recgpt_data.engines import Engine, get_engine, worker_name
from recgpt_data.errors import UsageError
from recgpt_data.io import storage
from recgpt_data.io.storage import is_remote, join, put, remove_tree
from recgpt_data.pipeline.crash import kill_point
from recgpt_data.pipeline.fingerprint import FileRecord, file_sha256
from recgpt_data.pipeline.partition import PartitionTask, WholeTask, run_partition, run_whole
from recgpt_data.pipeline.planner import Planned
from recgpt_data.pipeline.shuffle import has_column, split_by
from recgpt_data.pipeline.store import PartRecord, Store, TableRecord, TableRef, attempt_name
from recgpt_data.stage import PARTITION_COLUMNS, Context, Preparation, Prepared, StageStats, count

Buckets = tuple[list[tuple[str, ...]] | None, tuple[str, ...]]
T = TypeVar("T")
R = TypeVar("R")


class Reporter(Protocol):
    """Receives progress while a run goes (the CLI draws it with rich)."""

    def stage_started(self, key: str, parts: int, rows: int) -> None: ...

    def part_done(self, key: str, rows: int) -> None: ...

    def stage_finished(self, key: str, state: str, stats: Mapping[str, Any]) -> None: ...


class SilentReporter:
    """A reporter that shows nothing (library use, tests)."""

    def stage_started(self, key: str, parts: int, rows: int) -> None:
        return None

    def part_done(self, key: str, rows: int) -> None:
        return None

    def stage_finished(self, key: str, state: str, stats: Mapping[str, Any]) -> None:
        return None


def merge_stats(parts: Iterable[Mapping[str, Any]]) -> StageStats:
    """One stats record from the buckets' records: counts summed, info merged key by key."""
    merged = StageStats()
    for part in parts:
        for attr in ("rows_in", "rows_out", "dropped", "changed"):
            target = getattr(merged, attr)
            for name, n in part[attr].items():
                target[name] = target.get(name, 0) + n
        merged.info = merge_info(merged.info, part["info"])
    merged.dropped = dict(sorted(merged.dropped.items()))
    merged.changed = dict(sorted(merged.changed.items()))
    return merged


def merge_info(a: Any, b: Any) -> Any:
    """Merge two buckets' ``info``: numbers add up, objects merge by key, lists concatenate."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: merge_info(a[k], b[k]) if k in a and k in b else a.get(k, b.get(k)) for k in {**a, **b}}
    if isinstance(a, bool) or isinstance(b, bool):
        return a if a == b else [a, b]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a + b
    if isinstance(a, list) and isinstance(b, list):
        return a + b
    return a if a == b else [a, b]


def with_prepared(parts: list[Mapping[str, Any]], prepared: Prepared | None) -> StageStats:
    """A stage's stats: its tasks' records merged, with what its prepare step (if any) counted in
    the tables it wrote whole and its ``info``."""
    if prepared is None:
        return merge_stats(parts)
    stats = merge_stats([*parts, {**StageStats().to_dict(), **prepared.stats}])
    stats.info = merge_info(stats.info, dict(prepared.info))
    return stats


def traced(fn: Callable[[T], R], task: T) -> tuple[str, R]:
    """A task's result with the worker that ran it."""
    return worker_name(), fn(task)


def traced_map(
    engine: Engine, workers: set[str], fn: Callable[[T], R], tasks: Sequence[T], *, here: bool
) -> Iterator[R]:
    """``engine.map`` of a prepare step: its results, each task's worker added to ``workers``."""
    for worker, result in engine.map(partial(traced, fn), tasks, here=here):
        workers.add(worker)
        yield result


class Executor:
    """Runs stages against one store, their tasks on ``engine`` (default: local, in process)."""

    def __init__(self, store: Store, engine: Engine | None, reporter: Reporter):
        self.store = store
        self.engine = engine or get_engine("local")
        self.owns_engine = engine is None
        self.reporter = reporter
        # With the output in object storage, a stage's scratch, its final-folder files and the
        # final folder's mirror are in the driver's local work folder: the tasks that read or write
        # them (whole stages, prepare steps not registered ``prepare_anywhere``) run on the driver's
        # node; buckets and cuts, which only read and write the store (a prepare step's tables
        # uploaded there), and the tasks of a ``prepare_anywhere`` step go anywhere.
        self.local_work = is_remote(store.out)

    def close(self) -> None:
        """Stop the workers of the engine this executor started itself (a stage that declares its
        own resources runs its local tasks in workers); an engine it was lent is its lender's."""
        if self.owns_engine:
            self.engine.close()

    def run(
        self, planned: Planned, fingerprint: str, inputs: Mapping[str, TableRef], context: Context
    ) -> tuple[dict[str, TableRecord], StageStats, dict[str, Any]]:
        """Run ``planned`` on ``inputs`` and write its tables; what it wrote, its stats and where
        its tasks ran: for a whole stage the worker that ran it (a bucket's record names its own),
        and the workers that ran its prepare step's tasks. The stage's own tasks (whole, buckets,
        prepare step) declare the CPUs and memory its spec entry gives, else the engine's; the cuts
        of its input tables into buckets are the engine's, with its defaults."""
        workers: set[str] = set()
        engine = self.engine.sized(planned.spec.task_cpus, planned.spec.task_memory)
        if planned.partitions is not None:
            written, stats = self.run_partitioned(planned, fingerprint, inputs, context, engine, workers)
            where: dict[str, Any] = {}
        else:
            written, stats, worker = self.run_whole(planned, fingerprint, inputs, context, engine, workers)
            where = {"worker": worker}
        if workers:
            where["prepare_workers"] = sorted(workers)
        return written, stats, where

    def run_whole(
        self,
        planned: Planned,
        fingerprint: str,
        inputs: Mapping[str, TableRef],
        context: Context,
        engine: Engine,
        workers: set[str],
    ) -> tuple[dict[str, TableRecord], StageStats, str]:
        """Run a stage on whole tables as one task on the engine (in this process with one local
        worker) and write each output table; the driver sees only the task's record."""
        key = planned.key
        counts = {name: count(self.store.scan(ref)) for name, ref in inputs.items()}  # parquet footers
        self.reporter.stage_started(key, 1, sum(counts.values()))
        files = {name: tuple(str(f) for f in self.store.paths(ref)) for name, ref in inputs.items()}
        prepared = self.prepare(
            planned, {name: (None, whole) for name, whole in files.items()}, context, engine, workers
        )
        task = WholeTask(
            definition=planned.definition,
            params=planned.params,
            context=context,
            inputs={**files, **(dict(prepared.tables) if prepared is not None else {})},
            target=self.store.stage_dir(key),
            fingerprint=fingerprint,
        )
        if engine.in_process:
            record = run_whole(task, after_each=lambda: kill_point(key, "mid"))
        else:
            [record] = list(engine.map(run_whole, [task], here=self.local_work))
            kill_point(key, "mid")
        written = {name: TableRecord((f,)) for name, f in record.tables.items()}
        if prepared is not None:
            written.update(self.adopt(key, prepared))
            self.clear_prepared(key)
        stats = with_prepared([record.stats], prepared)
        for name, n in counts.items():
            stats.rows_in.setdefault(name, n)
        self.reporter.part_done(key, sum(counts.values()))
        return written, stats, record.worker

    def run_partitioned(
        self,
        planned: Planned,
        fingerprint: str,
        inputs: Mapping[str, TableRef],
        context: Context,
        engine: Engine,
        workers: set[str],
    ) -> tuple[dict[str, TableRecord], StageStats]:
        """Run a stage bucket by bucket on the engine, recording each finished bucket."""
        key = planned.key
        bucket_count = planned.partitions or 1
        column = PARTITION_COLUMNS[planned.definition.partition]
        buckets = {name: self.buckets(name, ref, column, bucket_count) for name, ref in inputs.items()}
        results = self.store.finished_parts(key, fingerprint)
        prepared = self.prepare(planned, buckets, context, engine, workers)
        shared = self.share(key, prepared.tables) if prepared is not None else {}
        tasks = [
            PartitionTask(
                definition=planned.definition,
                params=planned.params,
                context=replace(context, partition=(index, bucket_count)),
                inputs={
                    **{name: parts[index] if parts is not None else whole for name, (parts, whole) in buckets.items()},
                    **shared,
                },
                index=index,
                count=bucket_count,
                target=self.store.stage_dir(key),
                fingerprint=fingerprint,
            )
            for index in range(bucket_count)
            if index not in results
        ]
        bucket_rows = [  # rows of the bucketed tables in each bucket, from the parquet footers, for progress
            sum(count(pl.scan_parquet(list(parts[index]))) for parts, _ in buckets.values() if parts)
            for index in range(bucket_count)
        ]
        self.reporter.stage_started(key, bucket_count, sum(bucket_rows))
        for index in results:
            self.reporter.part_done(key, bucket_rows[index])
        for part in engine.map(run_partition, tasks):
            self.store.write_part(key, part)
            results[part.index] = part
            self.reporter.part_done(key, bucket_rows[part.index])
            kill_point(key, "mid")
        ordered: list[PartRecord] = [results[i] for i in range(bucket_count)]
        names = sorted({name for part in ordered for name in part.tables})
        written = {
            name: TableRecord(tuple(p.tables[name] for p in ordered if name in p.tables), bucket_count, column)
            for name in names
        }
        if prepared is not None:
            written.update(self.adopt(key, prepared))
            self.clear_prepared(key)
        stats = with_prepared([p.stats for p in ordered], prepared)
        for name, ref in inputs.items():
            stats.rows_in[name] = count(self.store.scan(ref))
        return written, stats

    def prepare(
        self,
        planned: Planned,
        buckets: Mapping[str, Buckets],
        context: Context,
        engine: Engine,
        workers: set[str],
    ) -> Prepared | None:
        """Run the stage's ``prepare`` step (if it has one) over all buckets (a whole stage's tables are
        each one entry), its tasks on the engine (on the driver's node where they need its disk),
        adding the workers that ran them to ``workers``."""
        prepare = planned.definition.prepare
        if prepare is None:
            return None
        anywhere = planned.definition.prepare_anywhere and self.local_work
        preparation = Preparation(
            buckets={name: tuple(parts) if parts is not None else (whole,) for name, (parts, whole) in buckets.items()},
            bucketed={name: parts is not None for name, (parts, _) in buckets.items()},
            scratch=context.scratch / "prepare",
            map=partial(traced_map, engine, workers, here=self.local_work and not anywhere),
            in_store=self.store.task_folders(planned.key) if anywhere else None,
        )
        prepared = prepare(preparation, planned.params, context)
        kill_point(planned.key, "prepared")
        clash = sorted(set(prepared.tables) & set(buckets))
        if clash:
            raise UsageError(f"stage {planned.key}: its prepare step returned tables it also reads: {clash}")
        return prepared

    def share(self, key: str, tables: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        """A prepare step's tables where every bucket's task can read them: as they are with a local
        output folder; with the output in object storage, the files the step wrote in the driver's
        work folder uploaded under the stage's prefix (attempt-unique keys, deleted once the
        buckets finish) and those its tasks put in the store as they are, so that the buckets run
        on any node."""
        if not self.local_work:
            return dict(tables)
        folder = self.store.prepared(key)
        shared = {}
        for name, files in tables.items():
            shared[name] = tuple(
                file if is_remote(file) else str(join(folder, attempt_name(f"{name}/{i:05d}.parquet")))
                for i, file in enumerate(files)
            )
            for file, stored in zip(files, shared[name], strict=True):
                if not is_remote(file):
                    put(Path(file), stored)
        return shared

    def adopt(self, key: str, prepared: Prepared) -> dict[str, TableRecord]:
        """Put the whole tables a prepare step wrote (local files, or objects its tasks put in the
        store) as the stage's output into its folder (a crash test's ``mid`` point after each)."""
        folder = self.store.stage_dir(key)
        records = {}
        for name, files in prepared.outputs.items():
            moved = []
            for index, file in enumerate(files):
                relative = f"{name}/whole-{index:05d}.parquet"
                stored = attempt_name(relative) if is_remote(folder) else relative
                if is_remote(file):  # a copy within the store, hashed as it is read once
                    moved.append(FileRecord(stored, storage.size(file) or 0, storage.sha256(file)))
                    storage.copy(file, join(folder, stored))
                else:
                    moved.append(FileRecord(stored, Path(file).stat().st_size, file_sha256(Path(file))))
                    put(Path(file), join(folder, stored))
            records[name] = TableRecord(tuple(moved))
            kill_point(key, "mid")
        return records

    def clear_prepared(self, key: str) -> None:
        """Delete what a prepare step put in the store (its tables for the buckets, its tasks'
        scratch) once the stage has adopted its outputs; a local output's scratch goes with the
        stage's."""
        if self.local_work:
            remove_tree(self.store.prepared(key))

    def buckets(self, name: str, ref: TableRef, column: str, bucket_count: int) -> Buckets:
        """A table as buckets see it: for a table with the bucket ``column``, each bucket's files
        (its own part if an earlier stage wrote it in the same buckets, else its pieces of a cut made
        once, in tasks on the engine, and kept beside the table); for any other table, ``None`` and
        all its files, which every bucket reads whole."""
        files = self.store.paths(ref)
        whole = tuple(str(f) for f in files)
        if not has_column(files, column):
            return None, whole
        if (ref.partitions, ref.partition_column) == (bucket_count, column):
            return [(str(f),) for f in files], whole
        cut = split_by(
            files, column, bucket_count, self.store.bucket_cut(ref, name, column, bucket_count), self.engine.map
        )
        return [tuple(str(f) for f in pieces) for pieces in cut], whole
