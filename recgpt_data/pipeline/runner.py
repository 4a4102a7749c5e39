"""The runner: executes a spec's stages in order, owning all I/O, caching and resume around them.

Layout under the output folder ``out``:

- ``.stages/<key>/<table>.parquet`` (or ``<table>/part-NNNNN.parquet`` per user bucket for a
  partitioned stage): each stage's output tables, read by later stages as lazy parquet scans.
- ``.stages/<key>/_SUCCESS.json``: written last, once every output is in place. It records the
  stage's fingerprint, its files (path, size, sha256) and its stats. A stage whose recorded
  fingerprint matches and whose files are all there is skipped.
- ``.stages/<key>/_parts/NNNNN.json``: one per finished bucket, so a killed partitioned stage
  resumes with the buckets it had not finished.
- files a stage writes to ``ctx.out_dir`` are staged in ``.stages/<key>/out/`` and moved into
  ``out`` when the stage succeeds, so the final folder never holds a file of an unfinished stage.
- ``stats.json``: per-stage stats (rows in and out, drops and changes by reason, seconds, bytes),
  and the run's warnings (see :mod:`recgpt_data.pipeline.run_warnings`).

Every file is written under a temporary name and renamed, so a run killed at any point (tests do it
with ``RECGPT_KILL_AT=stage:<key>:before|mid|publish|after``) leaves no partial file visible, and
a rerun finishes with the same bytes as a run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from recgpt_data import stage as registry
from recgpt_data.engines import Engine, get_engine
from recgpt_data.errors import UsageError
from recgpt_data.io.lock import folder_lock
from recgpt_data.io.parquet import write_parquet, write_text
from recgpt_data.pipeline.fingerprint import FileRecord, HashCache, digest, file_sha256, raw_inputs, source_sha256
from recgpt_data.pipeline.partition import PartitionResult, PartitionTask, run_partition
from recgpt_data.pipeline.run_warnings import run_warnings, stage_warnings
from recgpt_data.pipeline.shuffle import has_column, split_by
from recgpt_data.pipeline.spec import PipelineSpec, StageSpec
from recgpt_data.stage import PARTITION_COLUMNS, Context, Params, StageDef, StageStats

KILL_ENV = "RECGPT_KILL_AT"
KILL_POINTS = ("before", "mid", "publish", "after")
MARKER = "_SUCCESS.json"
STAGES = ".stages"
RESERVED = ("stats.json", STAGES, ".scratch")


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


@dataclass(frozen=True)
class TableRef:
    """The current version of a named table: its files (relative to ``out``), its bucket count and
    the column its buckets were cut by if a partitioned stage wrote it, and the fingerprint of that
    stage."""

    files: tuple[FileRecord, ...]
    partitions: int | None
    fingerprint: str
    stage: str
    partition_column: str | None = None


@dataclass(frozen=True)
class Planned:
    """A stage of the spec, looked up and with validated parameters."""

    spec: StageSpec
    definition: StageDef
    params: Params
    partitions: int | None

    @property
    def key(self) -> str:
        return self.spec.key


@dataclass
class RunResult:
    """What a run did: each stage's stats and state (``ran`` or ``cached``), and the final tables."""

    stats: dict[str, dict] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    tables: dict[str, pl.LazyFrame] = field(default_factory=dict)


@dataclass(frozen=True)
class StageStatus:
    """Where a stage stands in an output folder: ``done``, ``stale`` or ``missing``, and why."""

    key: str
    state: str
    reason: str


def kill_point(key: str, point: str) -> None:
    """Kill this process with SIGKILL if ``RECGPT_KILL_AT`` names this point (crash tests)."""
    if os.environ.get(KILL_ENV) == f"stage:{key}:{point}":
        os.kill(os.getpid(), signal.SIGKILL)


def check_kill_point(keys: list[str]) -> None:
    """Refuse a ``RECGPT_KILL_AT`` that names no stage or point of this spec (a crash test's typo)."""
    wanted = os.environ.get(KILL_ENV)
    if not wanted:
        return
    parts = wanted.split(":")
    if len(parts) != 3 or parts[0] != "stage" or parts[1] not in keys or parts[2] not in KILL_POINTS:
        raise UsageError(f"{KILL_ENV}={wanted!r}: want stage:<key>:<{'|'.join(KILL_POINTS)}> with a key of this spec")


def plan(spec: PipelineSpec) -> list[Planned]:
    """Every stage of ``spec`` looked up in the registry, with its parameters validated."""
    planned = []
    for stage_spec in spec.stages:
        try:
            definition = registry.get(stage_spec.stage)
        except KeyError as exc:
            raise UsageError(f"stage {stage_spec.key}: {exc.args[0]}") from None
        try:
            params = definition.params(**stage_spec.params)
        except Exception as exc:  # noqa: BLE001 - pydantic's message names the bad field
            raise UsageError(f"stage {stage_spec.key}: bad parameters: {exc}") from None
        partitions = spec.partitions_of(stage_spec) if definition.partition else None
        reserved = [t for t in definition.writes if t == "out" or t.startswith("_")]
        if reserved:
            raise UsageError(f"stage {stage_spec.key}: table names 'out' and '_*' are the runner's: {reserved}")
        planned.append(Planned(stage_spec, definition, params, partitions))
    return planned


def read_marker(stage_dir: Path) -> dict[str, Any] | None:
    """A stage's success record, or ``None`` if it has none (or an unreadable one)."""
    path = stage_dir / MARKER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def outputs_present(marker: Mapping[str, Any], out: Path) -> bool:
    """Whether every file a success record lists is still there with its recorded size."""
    stage_dir = out / STAGES / marker["key"]
    listed = [(stage_dir / f["path"], f["size"]) for t in marker["tables"].values() for f in t["files"]]
    listed += [(out / f["path"], f["size"]) for f in marker["published"]]
    return all(path.is_file() and path.stat().st_size == size for path, size in listed)


def table_refs(marker: Mapping[str, Any]) -> dict[str, TableRef]:
    """The tables a success record says its stage wrote."""
    prefix = f"{STAGES}/{marker['key']}/"
    return {
        name: TableRef(
            tuple(FileRecord(prefix + f["path"], f["size"], f["sha256"]) for f in table["files"]),
            table["partitions"],
            marker["fingerprint"],
            marker["key"],
            table.get("partition_column"),
        )
        for name, table in marker["tables"].items()
    }


class Runner:
    """Runs (or reports on) one spec against one output folder."""

    def __init__(
        self,
        spec: PipelineSpec,
        out: str | Path,
        engine: Engine | None = None,
        reporter: Reporter | None = None,
    ):
        self.spec = spec
        self.out = Path(out)
        self.engine = engine
        self.reporter = reporter or SilentReporter()
        self.planned = plan(spec)
        self.cache = HashCache(self.out / STAGES / "hash-cache.json")
        check_kill_point([p.key for p in self.planned])

    def stage_dir(self, key: str) -> Path:
        return self.out / STAGES / key

    def inputs_of(self, planned: Planned, tables: Mapping[str, TableRef]) -> dict[str, TableRef]:
        """The tables ``planned`` reads, with a clear error for a required one no earlier stage wrote."""
        missing = [t for t in planned.definition.reads if t not in tables]
        if missing:
            raise UsageError(f"stage {planned.key} reads {', '.join(missing)}, which no earlier stage writes")
        names = planned.definition.reads + tuple(t for t in planned.definition.optional_reads if t in tables)
        return {name: tables[name] for name in names}

    def fingerprint(self, planned: Planned, tables: Mapping[str, TableRef], earlier: Mapping[str, str]) -> str:
        """The stage's fingerprint given the tables it would read and the earlier stages' fingerprints."""
        inputs = self.inputs_of(planned, tables)
        params = planned.params.model_dump(mode="json")
        return digest(
            {
                "stage": planned.definition.name,
                "version": planned.definition.version,
                "source": source_sha256(planned.definition.fn),
                "params": params,
                "seed": self.spec.seed,
                "partitions": planned.partitions,
                "upstream": {name: ref.fingerprint for name, ref in inputs.items()},
                "inputs": {name: [f.to_dict() for f in ref.files] for name, ref in inputs.items()},
                "raw": raw_inputs(params, self.spec.folder, self.cache),
                "earlier": dict(earlier) if planned.definition.summarises else {},
            }
        )

    def selected(self, until: str | None, only: str | None) -> list[Planned]:
        """The stages a run goes through: up to ``until`` or ``only`` (inclusive), else all."""
        keys = [p.key for p in self.planned]
        for flag, value in (("--until", until), ("--only", only)):
            if value is not None and value not in keys:
                raise UsageError(f"{flag} {value!r} is not a stage of {self.spec.name}: {', '.join(keys)}")
        if until is not None and only is not None:
            raise UsageError("--until and --only do not go together")
        last = until or only
        return self.planned[: keys.index(last) + 1] if last else list(self.planned)

    def run(self, until: str | None = None, only: str | None = None, force: bool = False) -> RunResult:
        """Run the selected stages, skipping those whose outputs are current (unless forced)."""
        selected = self.selected(until, only)
        with self.lock():
            return self.run_stages(selected, only, force)

    def lock(self) -> AbstractContextManager[None]:
        """Hold the output folder for this run (the lock ``recgpt-data ingest`` takes too)."""
        return folder_lock(self.out)

    def run_stages(self, selected: list[Planned], only: str | None, force: bool) -> RunResult:
        """Run ``selected`` in order (see :meth:`run`)."""
        result = RunResult()
        tables: dict[str, TableRef] = {}
        earlier: dict[str, str] = {}
        for planned in selected:
            marker = read_marker(self.stage_dir(planned.key))
            if only is not None and planned.key != only:
                if marker is None or not outputs_present(marker, self.out):
                    raise UsageError(
                        f"--only {only}: stage {planned.key} has no cached output; run without --only first"
                    )
                state = "cached"
            else:
                fingerprint = self.fingerprint(planned, tables, earlier)
                self.cache.save()
                current = (
                    marker is not None and marker["fingerprint"] == fingerprint and outputs_present(marker, self.out)
                )
                if current and not force and only is None:
                    state = "cached"
                else:
                    marker = self.execute(planned, fingerprint, tables, result.stats, marker)
                    state = "ran"
            tables.update(table_refs(marker))
            earlier[planned.key] = marker["fingerprint"]
            result.stats[planned.key] = marker["stats"]
            result.states[planned.key] = state
            self.write_stats(result.stats)
            self.reporter.stage_finished(planned.key, state, marker["stats"])
        result.tables = {name: pl.scan_parquet([self.out / f.path for f in ref.files]) for name, ref in tables.items()}
        return result

    def execute(
        self,
        planned: Planned,
        fingerprint: str,
        tables: Mapping[str, TableRef],
        stats_so_far: Mapping[str, dict],
        old: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """Run one stage from scratch (keeping finished buckets of the same fingerprint) and record it."""
        key = planned.key
        kill_point(key, "before")
        stage_dir = self.stage_dir(key)
        self.reset(stage_dir, fingerprint, old)
        context = Context(
            seed=self.spec.seed,
            spec_dir=self.spec.folder,
            out_dir=stage_dir / "out",
            scratch=self.out / ".scratch" / key,
            folder=self.out,
            stages=dict(stats_so_far),
        )
        started = time.perf_counter()
        inputs = self.inputs_of(planned, tables)
        if planned.partitions is not None:
            written, stats = self.run_partitioned(planned, fingerprint, inputs, context, stage_dir)
        else:
            written, stats = self.run_whole(planned, inputs, context, stage_dir)
        shutil.rmtree(context.scratch, ignore_errors=True)
        published = self.publish(key, stage_dir / "out")
        kill_point(key, "publish")
        record = stats.to_dict()
        record["warnings"] = stage_warnings(
            key,
            planned.definition.heuristic,
            {name: [self.out / f.path for f in ref.files] for name, ref in inputs.items()},
            {name: [stage_dir / f.path for f in t["files"]] for name, t in written.items()},
            record["info"],
        )
        record["seconds"] = round(time.perf_counter() - started, 3)
        record["bytes_written"] = sum(f.size for t in written.values() for f in t["files"]) + sum(
            f.size for f in published
        )
        marker = {
            "key": key,
            "stage": planned.definition.name,
            "version": planned.definition.version,
            "fingerprint": fingerprint,
            "tables": {
                name: {
                    "files": [f.to_dict() for f in t["files"]],
                    "partitions": t["partitions"],
                    "partition_column": t["partition_column"],
                }
                for name, t in written.items()
            },
            "published": [f.to_dict() for f in published],
            "stats": record,
        }
        write_text(json.dumps(marker, indent=2, ensure_ascii=False) + "\n", stage_dir / MARKER)
        kill_point(key, "after")
        return marker

    def reset(self, stage_dir: Path, fingerprint: str, old: Mapping[str, Any] | None) -> None:
        """Clear what a previous attempt left: its published files, its record and its scratch.
        An attempt that never finished keeps its finished buckets of the same fingerprint, so the
        run resumes; a finished one being redone (forced, changed, or with files gone) keeps nothing."""
        keep: set[Path] = set()
        if old is not None:
            for f in old.get("published", []):
                (self.out / f["path"]).unlink(missing_ok=True)
            (stage_dir / MARKER).unlink(missing_ok=True)
        else:
            for part in self.finished_parts(stage_dir, fingerprint).values():
                keep.add(stage_dir / "_parts" / f"{part.index:05d}.json")
                keep.update(stage_dir / f.path for f in part.tables.values())
        if stage_dir.is_dir():
            for path in sorted(stage_dir.rglob("*"), reverse=True):
                if path.is_file() and path not in keep:
                    path.unlink()
                elif path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
        shutil.rmtree(self.out / ".scratch" / stage_dir.name, ignore_errors=True)

    def finished_parts(self, stage_dir: Path, fingerprint: str) -> dict[int, PartitionResult]:
        """Buckets a previous attempt with the same fingerprint finished, whose files are intact."""
        found: dict[int, PartitionResult] = {}
        for path in sorted((stage_dir / "_parts").glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                continue
            if record["fingerprint"] != fingerprint:
                continue
            files = {name: FileRecord(**f) for name, f in record["tables"].items()}
            if all(
                (stage_dir / f.path).is_file() and (stage_dir / f.path).stat().st_size == f.size for f in files.values()
            ):
                found[record["index"]] = PartitionResult(
                    record["index"], files, record["stats"], record["seconds"], record["worker"]
                )
        return found

    def run_whole(
        self, planned: Planned, inputs: Mapping[str, TableRef], context: Context, stage_dir: Path
    ) -> tuple[dict[str, dict], StageStats]:
        """Run a stage on whole tables in this process and write each output table."""
        frames = {name: pl.scan_parquet([self.out / f.path for f in ref.files]) for name, ref in inputs.items()}
        counts = {name: registry.count(frame) for name, frame in frames.items()}
        self.reporter.stage_started(planned.key, 1, sum(counts.values()))
        output = planned.definition.fn(frames, planned.params, context)
        stats = output.stats
        for name, count in counts.items():
            stats.rows_in.setdefault(name, count)
        written: dict[str, dict] = {}
        for name, frame in output.to_write().items():
            data = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
            path = stage_dir / f"{name}.parquet"
            write_parquet(data, path)
            if name in output.tables:
                stats.rows_out.setdefault(name, data.height)
            written[name] = {
                "files": [FileRecord(path.name, path.stat().st_size, file_sha256(path))],
                "partitions": None,
                "partition_column": None,
            }
            kill_point(planned.key, "mid")
        self.reporter.part_done(planned.key, sum(counts.values()))
        return written, stats

    def run_partitioned(
        self,
        planned: Planned,
        fingerprint: str,
        inputs: Mapping[str, TableRef],
        context: Context,
        stage_dir: Path,
    ) -> tuple[dict[str, dict], StageStats]:
        """Run a stage bucket by bucket on the engine, recording each finished bucket."""
        count = planned.partitions or 1
        column = PARTITION_COLUMNS[planned.definition.partition]
        table_inputs = {name: [self.out / f.path for f in ref.files] for name, ref in inputs.items()}
        buckets = {name: self.buckets(name, ref, column, count) for name, ref in inputs.items()}
        results = self.finished_parts(stage_dir, fingerprint)
        tasks = [
            PartitionTask(
                definition=planned.definition,
                params=planned.params,
                context=replace(context, partition=(index, count)),
                inputs={name: parts[index] if parts is not None else whole for name, (parts, whole) in buckets.items()},
                index=index,
                count=count,
                target=stage_dir,
            )
            for index in range(count)
            if index not in results
        ]
        bucket_rows = [  # rows of the bucketed tables in each bucket, from the parquet footers, for progress
            sum(registry.count(pl.scan_parquet(list(parts[index]))) for parts, _ in buckets.values() if parts)
            for index in range(count)
        ]
        self.reporter.stage_started(planned.key, count, sum(bucket_rows))
        for index in results:
            self.reporter.part_done(planned.key, bucket_rows[index])
        engine = self.engine or get_engine("local")
        for part in engine.map(run_partition, tasks):
            record = {
                "fingerprint": fingerprint,
                "index": part.index,
                "tables": {name: f.to_dict() for name, f in part.tables.items()},
                "stats": part.stats,
                "seconds": part.seconds,
                "worker": part.worker,
            }
            write_text(json.dumps(record, indent=2) + "\n", stage_dir / "_parts" / f"{part.index:05d}.json")
            results[part.index] = part
            self.reporter.part_done(planned.key, bucket_rows[part.index])
            kill_point(planned.key, "mid")
        ordered = [results[i] for i in range(count)]
        names = sorted({name for part in ordered for name in part.tables})
        written = {
            name: {
                "files": [p.tables[name] for p in ordered if name in p.tables],
                "partitions": count,
                "partition_column": column,
            }
            for name in names
        }
        stats = merge_stats(p.stats for p in ordered)
        for name, files in table_inputs.items():
            stats.rows_in[name] = registry.count(pl.scan_parquet(files))
        return written, stats

    def buckets(
        self, name: str, ref: TableRef, column: str, count: int
    ) -> tuple[list[tuple[str, ...]] | None, tuple[str, ...]]:
        """A table as buckets see it: for a table with the bucket ``column``, one part file per
        bucket (its own parts if an earlier stage wrote it in the same buckets, else cut once and
        kept beside it); for any other table, ``None`` and all its files, which every bucket reads
        whole."""
        files = [self.out / f.path for f in ref.files]
        whole = tuple(str(f) for f in files)
        if not has_column(files, column):
            return None, whole
        if (ref.partitions, ref.partition_column) != (count, column):
            target = self.stage_dir(ref.stage) / "_buckets" / f"{name}-{column}-{count}"
            files = split_by(files, column, count, target)
        return [(str(f),) for f in files], whole

    def publish(self, key: str, staged: Path) -> list[FileRecord]:
        """Move the files a stage wrote for the final folder into place, one atomic rename each."""
        published = []
        if not staged.is_dir():
            return published
        for path in sorted(p for p in staged.rglob("*") if p.is_file()):
            relative = path.relative_to(staged)
            if relative.parts[0] in RESERVED or path.name.endswith(".tmp"):
                raise UsageError(f"stage {key} wrote {relative}, a name the runner keeps for itself")
            record = FileRecord(relative.as_posix(), path.stat().st_size, file_sha256(path))
            target = self.out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            published.append(record)
        shutil.rmtree(staged)
        return published

    def write_stats(self, stats: Mapping[str, dict]) -> None:
        """Write ``stats.json``: the pipeline, its seed, its warnings, each stage's stats and the corpus
        summary."""
        document: dict[str, Any] = {"pipeline": self.spec.name, "seed": self.spec.seed, "warnings": run_warnings(stats)}
        for record in stats.values():
            if "corpus" in record.get("info", {}):
                document["corpus"] = record["info"]["corpus"]
        document["stages"] = dict(stats)
        write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", self.out / "stats.json")

    def status(self) -> list[StageStatus]:
        """Each stage's state in the output folder, without running anything."""
        statuses = []
        tables: dict[str, TableRef] = {}
        earlier: dict[str, str] = {}
        outdated: list[str] = []
        for index, planned in enumerate(self.planned):
            marker = read_marker(self.stage_dir(planned.key))
            upstream = (
                {p.key for p in self.planned[:index]} if planned.definition.summarises else self.producers(planned)
            )
            blocked = [key for key in outdated if key in upstream]
            if marker is None:
                state, reason = "missing", "never finished"
            elif blocked:
                state, reason = "stale", f"reruns after {blocked[0]}, upstream, which is not current"
            elif not outputs_present(marker, self.out):
                state, reason = "stale", "an output file is missing or changed"
            elif self.fingerprint(planned, tables, earlier) != marker["fingerprint"]:
                state, reason = "stale", "code, parameters or inputs changed"
            else:
                state, reason = "done", f"{marker['stats'].get('seconds', 0)} s"
            statuses.append(StageStatus(planned.key, state, reason))
            if state != "done":
                outdated.append(planned.key)
            if marker is not None:
                tables.update(table_refs(marker))
                earlier[planned.key] = marker["fingerprint"]
        if (self.out / STAGES).is_dir():
            self.cache.save()
        return statuses

    def producers(self, planned: Planned) -> set[str]:
        """The keys of the earlier stages whose tables ``planned`` reads, directly or through others."""
        writers: dict[str, str] = {}
        needed: dict[str, set[str]] = {}
        for other in self.planned:
            direct = {writers[t] for t in other.definition.reads + other.definition.optional_reads if t in writers}
            needed[other.key] = direct.union(*(needed[d] for d in direct))
            if other.key == planned.key:
                return needed[other.key]
            for t in other.definition.writes:
                writers[t] = other.key
        return set()


def merge_stats(parts: Iterator[dict] | list[dict]) -> StageStats:
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


def run_spec(
    spec: PipelineSpec,
    out: str | Path,
    until: str | None = None,
    only: str | None = None,
    force: bool = False,
    engine: Engine | None = None,
    reporter: Reporter | None = None,
) -> RunResult:
    """Run ``spec``'s stages in order (through ``until``, or just ``only``), writing under ``out``."""
    return Runner(spec, out, engine=engine, reporter=reporter).run(until=until, only=only, force=force)


def spec_status(spec: PipelineSpec, out: str | Path) -> list[StageStatus]:
    """Each stage of ``spec``: done, stale or missing in ``out``."""
    return Runner(spec, out).status()
