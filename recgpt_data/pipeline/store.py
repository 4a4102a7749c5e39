"""The run's store: the on-disk layout under the output folder ``out`` and its typed records.

- ``.stages/<key>/<table>.parquet`` (or ``<table>/part-NNNNN.parquet`` per bucket for a
  partitioned stage): each stage's output tables, read by later stages as lazy parquet scans.
- ``.stages/<key>/_SUCCESS.json``: the stage's :class:`Marker`, written last, once every output is
  in place: its fingerprint, its files (path, size, sha256), the final-folder files it published
  and its stats. A stage whose fingerprint matches and whose files are all there is current.
- ``.stages/<key>/_parts/NNNNN.json``: a :class:`PartRecord` per finished bucket, so a killed
  partitioned stage resumes with the buckets it had not finished.
- ``.stages/<key>/_prepared/``: with the output in object storage, the tables a stage's prepare
  step wrote in the work folder, uploaded for its buckets to read on any node while they run; and,
  under ``_prepared/<attempt>/``, what the tasks of a ``prepare_anywhere`` step pass to each other
  (:meth:`Store.task_folders`). Deleted once the stage has adopted its outputs.
- ``.stages/<key>/out/``: files a stage writes for the final folder, moved into ``out`` when it
  succeeds, so the final folder never holds a file of an unfinished stage; with the output in
  object storage, ``out/<attempt>/`` holds those a ``prepare_anywhere`` step's tasks made.
- ``.scratch/<key>/``: a stage's scratch space, removed when it finishes.
- ``stats.json``: per-stage stats and the run's warnings.

Every file is written under a temporary name and renamed, so a run killed at any point leaves no
partial file visible.

``out`` may be an object-store URL (``s3://bucket/prefix``, :mod:`recgpt_data.io.storage`), where
nothing is renamed: each object is one PUT of a file finished locally, a stage's table objects get
attempt-unique keys (``<table>.attempt-<id>.parquet``, ``part-00003.attempt-<id>.parquet``), and
a stage is complete only once its marker, written last, names the exact keys it owns. Readers only
read keys a marker or a part record names, so what a dead attempt left is invisible (``recgpt-data
gc`` deletes it). The stages' own files (staged final-folder files, scratch) stay on local disk in a
work folder (:func:`work_folder`) and go up when the stage succeeds; the final folder as earlier
stages left it is mirrored there for the stages that read it (report, card). The exception is a
stage registered ``prepare_anywhere`` (ingest, clean_items, dedup, p5_benchmark, instruct_pairs,
write_pretrain, pretrain_tokens): its prepare step's tasks run on any node of a cluster, so they
exchange their files under the store's prefixes of the stage's attempt (``<attempt>`` is new each
time :meth:`Store.reset` starts the stage), which no record names: a killed attempt's objects there
are never read or published, and the rerun (its reset) or ``gc`` deletes them. Every stage
function keeps the work folder, and its task runs on the driver's node.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from recgpt_data.errors import UsageError
from recgpt_data.io import storage
from recgpt_data.io.parquet import write_parquet, write_text
from recgpt_data.io.storage import Location, is_remote, join, local_file, location_of
from recgpt_data.pipeline.fingerprint import FileRecord, HashCache, file_sha256
from recgpt_data.stage import StageOutput, TaskFolders

STAGES = ".stages"
SCRATCH = ".scratch"
MARKER = "_SUCCESS.json"
PARTS = "_parts"
BUCKETS = "_buckets"
PREPARED = "_prepared"  # a prepare step's tables, uploaded for the buckets while they run
STAGED = "out"  # a stage's final-folder files until it succeeds
STATS = "stats.json"
RESERVED = (STATS, STAGES, SCRATCH)  # names of the final folder that stages may not write
HASH_CACHE = "hash-cache.json"
MIRROR = "final"  # the work folder's copy of a remote final folder
WORK_ENV = "RECGPT_WORK_DIR"
ATTEMPT = re.compile(r"\.attempt-[0-9a-f]{12}(?=\.parquet$)")


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


def read_json(path: Location) -> Any:
    """A JSON file's value, or ``None`` if it is not there or not JSON (a record never finished)."""
    data = storage.read_bytes(path)
    if data is None:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def attempt_name(relative: str) -> str:
    """``relative`` made unique to this write (``x.parquet`` -> ``x.attempt-<id>.parquet``): on an
    object store, where nothing is renamed into place, no two attempts ever write the same key."""
    stem, _, suffix = relative.rpartition(".")
    return f"{stem}.attempt-{uuid.uuid4().hex[:12]}.{suffix}"


def without_attempt(relative: str) -> str:
    """``relative`` without the attempt id :func:`attempt_name` gave it: what a table file is,
    whichever attempt wrote it (a fingerprint covers this, its size and its sha256)."""
    return ATTEMPT.sub("", relative)


def write_tables(
    output: StageOutput,
    folder: Location,
    relative: Callable[[str], str],
    bucket_column: str | None = None,
    after_each: Callable[[], None] | None = None,
) -> dict[str, FileRecord]:
    """Write every table a stage's ``output`` holds (its outputs, dropped and blanked rows) under
    ``folder`` at ``relative(name)`` (with an attempt id on an object store), counting each output
    table's rows in its stats; a bucket's tables must each have its ``bucket_column``. The one
    table writer, for whole stages and buckets."""
    written = {}
    for name, frame in output.to_write().items():
        data = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
        if bucket_column is not None and bucket_column not in data.columns:
            raise UsageError(f"its table {name!r} has no {bucket_column} column, which its buckets are cut by")
        key = attempt_name(relative(name)) if is_remote(folder) else relative(name)
        with local_file(join(folder, key)) as path:
            write_parquet(data, path)
            written[name] = FileRecord(key, path.stat().st_size, file_sha256(path))
        if name in output.tables:
            output.stats.rows_out.setdefault(name, data.height)
        if after_each is not None:
            after_each()
    return written


def work_folder(out: str) -> Path:
    """The local folder a run on the object-store folder ``out`` stages its stages' own files in:
    ``$RECGPT_WORK_DIR``, else one per ``out`` under the system's temporary folder."""
    base = os.environ.get(WORK_ENV) or Path(tempfile.gettempdir()) / "recgpt-data"
    return Path(base) / hashlib.sha256(out.encode("utf-8")).hexdigest()[:16]


class Store:
    """The records and files of the run in the output folder ``out`` (a path or an object-store URL)."""

    def __init__(self, out: str | Path):
        self.out = location_of(out)
        self.root = join(self.out, STAGES)
        self.work = work_folder(self.out) if is_remote(self.out) else Path(self.out)
        self.attempts: dict[str, str] = {}  # each stage's attempt in this run (see reset)

    def stage_dir(self, key: str) -> Location:
        return join(self.root, key)

    def scratch(self, key: str) -> Path:
        return self.work / SCRATCH / key

    def staged(self, key: str) -> Path:
        """Where stage ``key`` writes its final-folder files until it succeeds (always local)."""
        return self.work / STAGES / key / STAGED

    def task_folders(self, key: str) -> TaskFolders:
        """Where the prepare step's tasks of stage ``key`` exchange files when they run on any node
        with the output in object storage: its scratch under ``_prepared/<attempt>/``, its
        final-folder files under ``out/<attempt>/`` (published with the stage, see :meth:`publish`)
        and the final folder, ``out`` itself (only published files are read there)."""
        return TaskFolders(join(self.prepared(key), self.attempts[key]), self.staged_in_store(key), self.out)

    def staged_in_store(self, key: str) -> Location:
        """Where the tasks of stage ``key``'s current attempt stage final-folder files in the store."""
        return join(self.stage_dir(key), f"{STAGED}/{self.attempts[key]}")

    def prepared(self, key: str) -> Location:
        """Where stage ``key``'s prepare step's tables are uploaded for its buckets to read, while
        they run, with the output in object storage."""
        return join(self.stage_dir(key), PREPARED)

    def bucket_cut(self, ref: TableRef, name: str, column: str, count: int) -> Location:
        """Where table ``name`` (as ``ref``) is kept cut into ``count`` buckets by ``column``, for a
        partitioned stage that reads it in other buckets than its writer's."""
        return join(self.stage_dir(ref.stage), f"{BUCKETS}/{name}-{column}-{count}")

    def hash_cache(self) -> HashCache:
        return HashCache(self.work / STAGES / HASH_CACHE)

    def has_run(self) -> bool:
        """Whether ``out`` holds a run's records at all."""
        return storage.exists(self.root)

    def paths(self, ref: TableRef) -> list[Location]:
        """A table's files."""
        return [join(self.out, f.path) for f in ref.files]

    def scan(self, ref: TableRef) -> pl.LazyFrame:
        """A table as a lazy parquet scan."""
        return pl.scan_parquet(self.paths(ref))

    def marker(self, key: str) -> Marker | None:
        """Stage ``key``'s success record, or ``None`` if it has none (or an unreadable one)."""
        data = read_json(join(self.stage_dir(key), MARKER))
        return Marker.from_json(data) if data is not None else None

    def markers(self) -> list[Marker]:
        """Every success record in the folder, by key."""
        found = (self.marker(key) for key in storage.folders(self.root))
        return [m for m in found if m is not None]

    def write_marker(self, marker: Marker) -> None:
        write_text(
            json.dumps(marker.to_json(), indent=2, ensure_ascii=False) + "\n",
            join(self.stage_dir(marker.key), MARKER),
        )

    def outputs_present(self, marker: Marker) -> bool:
        """Whether every file a success record lists is still there with its recorded size."""
        stage_dir = self.stage_dir(marker.key)
        listed = [(join(stage_dir, f.path), f.size) for t in marker.tables.values() for f in t.files]
        listed += [(join(self.out, f.path), f.size) for f in marker.published]
        return all(storage.size(path) == size for path, size in listed)

    def part_path(self, key: str, index: int) -> Location:
        return join(self.stage_dir(key), f"{PARTS}/{index:05d}.json")

    def write_part(self, key: str, part: PartRecord) -> None:
        write_text(json.dumps(part.to_json(), indent=2) + "\n", self.part_path(key, part.index))

    def resumable_files(self, key: str, fingerprint: str) -> set[Location]:
        """The files of the buckets an unfinished attempt with ``fingerprint`` finished: what a
        resumed run keeps (and gc must not delete)."""
        stage_dir = self.stage_dir(key)
        keep: set[Location] = set()
        for part in self.finished_parts(key, fingerprint).values():
            keep.add(self.part_path(key, part.index))
            keep.update(join(stage_dir, f.path) for f in part.tables.values())
        return keep

    def finished_parts(self, key: str, fingerprint: str) -> dict[int, PartRecord]:
        """Buckets an attempt with ``fingerprint`` finished, whose files are intact."""
        stage_dir = self.stage_dir(key)
        found: dict[int, PartRecord] = {}
        records = [name for name in storage.files(join(stage_dir, PARTS)) if name.endswith(".json") and "/" not in name]
        for name in records:
            data = read_json(join(stage_dir, f"{PARTS}/{name}"))
            if data is None or data["fingerprint"] != fingerprint:
                continue
            part = PartRecord.from_json(data)
            if all(storage.size(join(stage_dir, f.path)) == f.size for f in part.tables.values()):
                found[part.index] = part
        return found

    def reset(self, key: str, fingerprint: str, old: Marker | None) -> None:
        """Clear what a previous attempt left: its published files, its record and its scratch.
        An attempt that never finished keeps its finished buckets of the same fingerprint, so the
        run resumes; a finished one being redone (forced, changed, or with files gone) keeps nothing."""
        stage_dir = self.stage_dir(key)
        keep: set[Location] = set()
        if old is not None:
            storage.remove(join(stage_dir, MARKER))  # first: the stage stops counting as done
            for f in old.published:
                storage.remove(join(self.out, f.path))
                if is_remote(self.out):
                    storage.remove(join(self.work / MIRROR, f.path))
        else:
            keep = self.resumable_files(key, fingerprint)
        for relative in storage.files(stage_dir):
            if join(stage_dir, relative) not in keep:
                storage.remove(join(stage_dir, relative))
        storage.remove_empty_folders(stage_dir)
        storage.remove_tree(self.staged(key))
        storage.remove_tree(self.scratch(key))
        self.attempts[key] = uuid.uuid4().hex[:12]

    def publish(self, key: str) -> list[FileRecord]:
        """Move the files stage ``key`` wrote for the final folder into place, in path order: one
        atomic rename each, or on an object store one PUT each (a copy stays in the work folder's
        mirror); the files its tasks staged in the store (:meth:`task_folders`) are fetched into the
        mirror and copied into place within the store."""
        staged = self.staged(key)
        in_store = self.staged_in_store(key) if is_remote(self.out) and key in self.attempts else None
        found = {relative: staged / relative for relative in storage.files(staged)}
        for relative in storage.files(in_store) if in_store is not None else {}:
            if relative in found:
                raise UsageError(f"stage {key} wrote {relative} twice, in its prepare step's tasks and after")
            found[relative] = join(in_store, relative)
        published: list[FileRecord] = []
        for relative, source in sorted(found.items()):
            if relative.split("/")[0] in RESERVED or relative.endswith(".tmp"):
                raise UsageError(f"stage {key} wrote {relative}, a name the runner keeps for itself")
            if not is_remote(source):
                path = Path(source)
                published.append(FileRecord(relative, path.stat().st_size, file_sha256(path)))
                storage.put(path, join(self.out, relative))
                if is_remote(self.out):
                    storage.put(path, join(self.work / MIRROR, relative))
                continue
            mirror = Path(join(self.work / MIRROR, relative))
            storage.download(source, mirror)
            published.append(FileRecord(relative, mirror.stat().st_size, file_sha256(mirror)))
            storage.copy(source, join(self.out, relative))
        storage.remove_tree(staged)
        if in_store is not None:
            storage.remove_tree(in_store)
        return published

    def final_folder(self) -> Path:
        """The final folder as the finished stages left it, on local disk: ``out`` itself, or for
        an object store the work folder's mirror, first fetching what it lacks (a run resumed on
        another machine)."""
        if not is_remote(self.out):
            return Path(self.out)
        mirror = self.work / MIRROR
        for marker in self.markers():
            for f in marker.published:
                local = join(mirror, f.path)
                if storage.size(local) != f.size:
                    storage.download(join(self.out, f.path), local)
        return mirror

    def write_stats(self, document: Mapping[str, Any]) -> None:
        write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", join(self.out, STATS))
