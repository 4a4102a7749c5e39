"""Garbage collection of a run's cached intermediates: what under ``OUT/.stages`` and ``OUT/.scratch``
no stage of the current spec needs, found and (unless it is a dry run) deleted. The final folder's
files are never touched.

Kept, per stage of the spec:

- ``done`` (current): the files its success record lists, the record, its bucket records, and the
  bucket cuts of its tables that a later partitioned stage of the spec reads (``_buckets/``);
- ``missing`` (never finished): the finished buckets of an interrupted attempt whose fingerprint
  is the one the stage would run with now, so that a resumed run keeps them;
- ``stale``: only its success record, which names its final-folder files so that the rerun removes
  them (its tables would be rewritten anyway).

Deleted: everything else under ``.stages/<key>/`` (bucket cuts for other bucket counts, files of
unfinished attempts under other fingerprints, staged final-folder files of a killed run), folders of
stages the spec no longer has, and all of ``.scratch/``. The runner's hash cache and lock stay.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from recgpt_data.errors import UsageError
from recgpt_data.io.lock import LOCK_FILE, folder_lock
from recgpt_data.pipeline.planner import Planned
from recgpt_data.pipeline.runner import Runner
from recgpt_data.pipeline.shuffle import has_column
from recgpt_data.pipeline.spec import PipelineSpec
from recgpt_data.pipeline.status import stage_fingerprint
from recgpt_data.pipeline.store import HASH_CACHE, MARKER, PARTS, SCRATCH, STAGES, Store, TableRef
from recgpt_data.stage import PARTITION_COLUMNS

RUNNER_FILES = (HASH_CACHE, LOCK_FILE.name)  # the runner's own files directly under .stages/


@dataclass
class StageUsage:
    """One folder under ``.stages/`` (or the scratch): its state for the spec, its bytes, and the
    files no current stage needs."""

    key: str
    state: str
    bytes: int = 0
    unneeded: list[Path] = field(default_factory=list)
    unneeded_bytes: int = 0


def file_bytes(paths: Iterable[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def needed_cuts(store: Store, planned: Planned, tables: dict[str, TableRef]) -> set[Path]:
    """The bucket cuts partitioned stage ``planned`` reads: its input tables written in other
    buckets than its own, which the executor cuts into ``<writer>/_buckets/<table>-<column>-<count>``."""
    if planned.partitions is None:
        return set()
    column = PARTITION_COLUMNS[planned.definition.partition]
    cuts = set()
    for name in (n for n in planned.table_reads if n in tables):
        ref = tables[name]
        if (ref.partitions, ref.partition_column) != (planned.partitions, column) and has_column(
            store.paths(ref), column
        ):
            cuts.add(store.bucket_cut(ref, name, column, planned.partitions))
    return cuts


def needed_files(runner: Runner, states: dict[str, str]) -> set[Path]:
    """Every file under ``.stages/`` that a stage of the spec needs, by the rules of the module."""
    store = runner.store
    keep: set[Path] = set()
    tables: dict[str, TableRef] = {}
    earlier: dict[str, str] = {}
    for planned in runner.planned:
        stage_dir = store.stage_dir(planned.key)
        marker = store.marker(planned.key)
        state = states[planned.key]
        if marker is not None:
            keep.add(stage_dir / MARKER)
        if state == "done" and marker is not None:
            keep.update(stage_dir / f.path for t in marker.tables.values() for f in t.files)
            keep.update(files_under(stage_dir / PARTS))
        if state in ("done", "missing"):
            for cut in needed_cuts(store, planned, tables):
                keep.update(files_under(cut))
        if state == "missing" and all(name in tables for name in planned.definition.reads):
            fingerprint = stage_fingerprint(runner.plan, planned, tables, earlier, runner.cache)
            keep.update(store.resumable_files(planned.key, fingerprint))
        if marker is not None:
            tables.update(marker.refs())
            earlier[planned.key] = marker.fingerprint
    return keep


def survey(spec: PipelineSpec, out: Path) -> list[StageUsage]:
    """Each folder under ``out/.stages`` and the scratch: state for ``spec``, bytes, unneeded files."""
    if not (out / STAGES).is_dir():
        raise UsageError(f"{out} holds no run of a pipeline (no {STAGES}/ folder)")
    runner = Runner(spec, out)
    states = {status.key: status.state for status in runner.status()}
    keep = needed_files(runner, states)
    usages = []
    folders = sorted(p for p in (out / STAGES).iterdir() if p.is_dir())
    for folder in [*folders, out / SCRATCH]:
        files = files_under(folder)
        state = "scratch" if folder.name == SCRATCH else states.get(folder.name, "not in the spec")
        unneeded = [p for p in files if p not in keep]
        usages.append(StageUsage(folder.name, state, file_bytes(files), unneeded, file_bytes(unneeded)))
    loose = [p for p in (out / STAGES).iterdir() if p.is_file() and p.name not in RUNNER_FILES]
    if loose:
        usages.append(StageUsage("(loose files)", "not the runner's", file_bytes(loose), loose, file_bytes(loose)))
    return usages


def collect(spec: PipelineSpec, out: Path, dry_run: bool = False) -> list[StageUsage]:
    """Survey ``out`` for ``spec`` and, unless ``dry_run``, delete what no current stage needs,
    holding the folder's lock so that no run is writing meanwhile."""
    if dry_run:
        return survey(spec, out)
    with folder_lock(out):
        usages = survey(spec, out)
        for usage in usages:
            for path in usage.unneeded:
                path.unlink()
        for folder in [p for p in (out / STAGES).iterdir() if p.is_dir()] + [out / SCRATCH]:
            remove_empty_folders(folder)
    return usages


def remove_empty_folders(folder: Path) -> None:
    """Remove ``folder``'s empty sub-folders, deepest first, and ``folder`` itself if it ends empty."""
    if not folder.is_dir():
        return
    for path in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        if not any(path.iterdir()):
            path.rmdir()
    if not any(folder.iterdir()):
        shutil.rmtree(folder)
