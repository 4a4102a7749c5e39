"""The run's store: the on-disk layout under the output folder ``out`` and its typed records.

- ``.stages/<key>/<table>.parquet`` (or ``<table>/part-NNNNN.parquet`` per bucket for a
  partitioned stage): each stage's output tables, read by later stages as lazy parquet scans.
- ``.stages/<key>/_SUCCESS.json``: the stage's :class:`Marker`, written last, once every output is
  in place: its fingerprint, its files (path, size, sha256), the final-folder files it published
  and its stats. A stage whose fingerprint matches and whose files are all there is current.
- ``.stages/<key>/_parts/NNNNN.json``: a :class:`PartRecord` per finished bucket, so a killed
  partitioned stage resumes with the buckets it had not finished.
- ``.stages/<key>/out/``: files a stage writes for the final folder, moved into ``out`` when it
  succeeds, so the final folder never holds a file of an unfinished stage.
- ``.scratch/<key>/``: a stage's scratch space, removed when it finishes.
- ``stats.json``: per-stage stats and the run's warnings.

Every file is written under a temporary name and renamed, so a run killed at any point leaves no
partial file visible.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from recgpt_data.errors import UsageError
from recgpt_data.io.parquet import write_parquet, write_text
from recgpt_data.pipeline.fingerprint import FileRecord, HashCache, file_sha256
from recgpt_data.stage import StageOutput

STAGES = ".stages"
SCRATCH = ".scratch"
MARKER = "_SUCCESS.json"
PARTS = "_parts"
BUCKETS = "_buckets"
STAGED = "out"  # a stage's final-folder files until it succeeds
STATS = "stats.json"
RESERVED = (STATS, STAGES, SCRATCH)  # names of the final folder that stages may not write
HASH_CACHE = "hash-cache.json"


@dataclass(frozen=True)
class TableRecord:
    """A table a stage wrote: its files (relative to the stage folder) and, for a partitioned
    stage, its bucket count and the column its buckets were cut by."""

    files: tuple[FileRecord, ...]
    partitions: int | None = None
    partition_column: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "files": [f.to_dict() for f in self.files],
            "partitions": self.partitions,
            "partition_column": self.partition_column,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TableRecord:
        files = tuple(FileRecord(**f) for f in data["files"])
        return cls(files, data["partitions"], data.get("partition_column"))


@dataclass(frozen=True)
class TableRef:
    """The current version of a named table: its files (relative to ``out``), its bucket count and
    the column its buckets were cut by if a partitioned stage wrote it, and the key and fingerprint
    of the stage that wrote it."""

    files: tuple[FileRecord, ...]
    partitions: int | None
    fingerprint: str
    stage: str
    partition_column: str | None = None


@dataclass(frozen=True)
class Marker:
    """A stage's success record (``_SUCCESS.json``)."""

    key: str
    stage: str
    version: str
    fingerprint: str
    tables: Mapping[str, TableRecord]
    published: tuple[FileRecord, ...]
    stats: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "stage": self.stage,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "tables": {name: table.to_json() for name, table in self.tables.items()},
            "published": [f.to_dict() for f in self.published],
            "stats": dict(self.stats),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Marker:
        return cls(
            data["key"],
            data["stage"],
            data["version"],
            data["fingerprint"],
            {name: TableRecord.from_json(table) for name, table in data["tables"].items()},
            tuple(FileRecord(**f) for f in data["published"]),
            data["stats"],
        )

    def refs(self, fingerprint: str | None = None) -> dict[str, TableRef]:
        """The tables this record says its stage wrote, as later stages see them (``fingerprint``
        in place of the recorded one, for a stage that would run with another)."""
        prefix = f"{STAGES}/{self.key}/"
        return {
            name: TableRef(
                tuple(FileRecord(prefix + f.path, f.size, f.sha256) for f in table.files),
                table.partitions,
                fingerprint or self.fingerprint,
                self.key,
                table.partition_column,
            )
            for name, table in self.tables.items()
        }


@dataclass(frozen=True)
class PartRecord:
    """One finished bucket of a partitioned stage: what it wrote (paths relative to the stage
    folder), its stats, and which process on which host ran it."""

    fingerprint: str
    index: int
    tables: Mapping[str, FileRecord]
    stats: Mapping[str, Any]
    seconds: float
    worker: str

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "index": self.index,
            "tables": {name: f.to_dict() for name, f in self.tables.items()},
            "stats": dict(self.stats),
            "seconds": self.seconds,
            "worker": self.worker,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PartRecord:
        tables = {name: FileRecord(**f) for name, f in data["tables"].items()}
        return cls(data["fingerprint"], data["index"], tables, data["stats"], data["seconds"], data["worker"])


def read_json(path: Path) -> Any:
    """A JSON file's value, or ``None`` if it is not there or not JSON (a record never finished)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def write_tables(
    output: StageOutput,
    folder: Path,
    relative: Callable[[str], str],
    bucket_column: str | None = None,
    after_each: Callable[[], None] | None = None,
) -> dict[str, FileRecord]:
    """Write every table a stage's ``output`` holds (its outputs, dropped and blanked rows) under
    ``folder`` at ``relative(name)``, counting each output table's rows in its stats; a bucket's
    tables must each have its ``bucket_column``. The one table writer, for whole stages and buckets."""
    written = {}
    for name, frame in output.to_write().items():
        data = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
        if bucket_column is not None and bucket_column not in data.columns:
            raise UsageError(f"its table {name!r} has no {bucket_column} column, which its buckets are cut by")
        path = folder / relative(name)
        write_parquet(data, path)
        if name in output.tables:
            output.stats.rows_out.setdefault(name, data.height)
        written[name] = FileRecord(relative(name), path.stat().st_size, file_sha256(path))
        if after_each is not None:
            after_each()
    return written


class Store:
    """The records and files of the run in the output folder ``out``."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.root = self.out / STAGES

    def stage_dir(self, key: str) -> Path:
        return self.root / key

    def scratch(self, key: str) -> Path:
        return self.out / SCRATCH / key

    def staged(self, key: str) -> Path:
        """Where stage ``key`` writes its final-folder files until it succeeds."""
        return self.stage_dir(key) / STAGED

    def bucket_cut(self, ref: TableRef, name: str, column: str, count: int) -> Path:
        """Where table ``name`` (as ``ref``) is kept cut into ``count`` buckets by ``column``, for a
        partitioned stage that reads it in other buckets than its writer's."""
        return self.stage_dir(ref.stage) / BUCKETS / f"{name}-{column}-{count}"

    def hash_cache(self) -> HashCache:
        return HashCache(self.root / HASH_CACHE)

    def paths(self, ref: TableRef) -> list[Path]:
        """A table's files."""
        return [self.out / f.path for f in ref.files]

    def scan(self, ref: TableRef) -> pl.LazyFrame:
        """A table as a lazy parquet scan."""
        return pl.scan_parquet(self.paths(ref))

    def marker(self, key: str) -> Marker | None:
        """Stage ``key``'s success record, or ``None`` if it has none (or an unreadable one)."""
        data = read_json(self.stage_dir(key) / MARKER)
        return Marker.from_json(data) if data is not None else None

    def markers(self) -> list[Marker]:
        """Every success record in the folder, by key."""
        if not self.root.is_dir():
            return []
        found = (self.marker(d.name) for d in sorted(self.root.iterdir()) if d.is_dir())
        return [m for m in found if m is not None]

    def write_marker(self, marker: Marker) -> None:
        write_text(
            json.dumps(marker.to_json(), indent=2, ensure_ascii=False) + "\n", self.stage_dir(marker.key) / MARKER
        )

    def outputs_present(self, marker: Marker) -> bool:
        """Whether every file a success record lists is still there with its recorded size."""
        stage_dir = self.stage_dir(marker.key)
        listed = [(stage_dir / f.path, f.size) for t in marker.tables.values() for f in t.files]
        listed += [(self.out / f.path, f.size) for f in marker.published]
        return all(path.is_file() and path.stat().st_size == size for path, size in listed)

    def part_path(self, key: str, index: int) -> Path:
        return self.stage_dir(key) / PARTS / f"{index:05d}.json"

    def write_part(self, key: str, part: PartRecord) -> None:
        write_text(json.dumps(part.to_json(), indent=2) + "\n", self.part_path(key, part.index))

    def resumable_files(self, key: str, fingerprint: str) -> set[Path]:
        """The files of the buckets an unfinished attempt with ``fingerprint`` finished: what a
        resumed run keeps (and gc must not delete)."""
        stage_dir = self.stage_dir(key)
        keep: set[Path] = set()
        for part in self.finished_parts(key, fingerprint).values():
            keep.add(self.part_path(key, part.index))
            keep.update(stage_dir / f.path for f in part.tables.values())
        return keep

    def finished_parts(self, key: str, fingerprint: str) -> dict[int, PartRecord]:
        """Buckets an attempt with ``fingerprint`` finished, whose files are intact."""
        stage_dir = self.stage_dir(key)
        found: dict[int, PartRecord] = {}
        for path in sorted((stage_dir / PARTS).glob("*.json")):
            data = read_json(path)
            if data is None or data["fingerprint"] != fingerprint:
                continue
            part = PartRecord.from_json(data)
            files = [stage_dir / f.path for f in part.tables.values()]
            sizes = [f.size for f in part.tables.values()]
            if all(p.is_file() and p.stat().st_size == size for p, size in zip(files, sizes, strict=True)):
                found[part.index] = part
        return found

    def reset(self, key: str, fingerprint: str, old: Marker | None) -> None:
        """Clear what a previous attempt left: its published files, its record and its scratch.
        An attempt that never finished keeps its finished buckets of the same fingerprint, so the
        run resumes; a finished one being redone (forced, changed, or with files gone) keeps nothing."""
        stage_dir = self.stage_dir(key)
        keep: set[Path] = set()
        if old is not None:
            for f in old.published:
                (self.out / f.path).unlink(missing_ok=True)
            (stage_dir / MARKER).unlink(missing_ok=True)
        else:
            keep = self.resumable_files(key, fingerprint)
        if stage_dir.is_dir():
            for path in sorted(stage_dir.rglob("*"), reverse=True):
                if path.is_file() and path not in keep:
                    path.unlink()
                elif path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
        shutil.rmtree(self.scratch(key), ignore_errors=True)

    def publish(self, key: str) -> list[FileRecord]:
        """Move the files stage ``key`` wrote for the final folder into place, one atomic rename each."""
        staged = self.staged(key)
        published: list[FileRecord] = []
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

    def write_stats(self, document: Mapping[str, Any]) -> None:
        write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", self.out / STATS)
