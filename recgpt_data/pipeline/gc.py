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

On an object store (``s3://...``) the same rules find the objects of dead attempts: table and part
objects under attempt-unique keys that no success record or part record names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from recgpt_data.errors import UsageError
from recgpt_data.io import storage
from recgpt_data.io.lock import LOCK_FILE, folder_lock
from recgpt_data.io.storage import Location, join
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
    unneeded: list[Location] = field(default_factory=list)
    unneeded_bytes: int = 0


def files_under(folder: Location) -> dict[Location, int]:
    """Every file under ``folder`` and its size."""
    return {join(folder, relative): size for relative, size in storage.files(folder).items()}


def needed_cuts(store: Store, planned: Planned, tables: dict[str, TableRef]) -> set[Location]:
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


def needed_files(runner: Runner, states: dict[str, str]) -> set[Location]:
    """Every file under ``.stages/`` that a stage of the spec needs, by the rules of the module."""
    store = runner.store
    keep: set[Location] = set()
    tables: dict[str, TableRef] = {}
    earlier: dict[str, str] = {}
    for planned in runner.planned:
        stage_dir = store.stage_dir(planned.key)
        marker = store.marker(planned.key)
        state = states[planned.key]
        if marker is not None:
            keep.add(join(stage_dir, MARKER))
        if state == "done" and marker is not None:
            keep.update(join(stage_dir, f.path) for t in marker.tables.values() for f in t.files)
            keep.update(files_under(join(stage_dir, PARTS)))
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


def usage(key: str, state: str, listed: Mapping[Location, int], keep: set[Location]) -> StageUsage:
    """A folder's usage from its files and sizes: those not in ``keep`` are unneeded."""
    unneeded = [path for path in listed if path not in keep]
    return StageUsage(key, state, sum(listed.values()), unneeded, sum(listed[p] for p in unneeded))


def survey(spec: PipelineSpec, out: Location) -> list[StageUsage]:
    """Each folder under ``out/.stages`` and the scratch: state for ``spec``, bytes, unneeded files."""
    runner = Runner(spec, out)
    store = runner.store
    if not store.has_run():
        raise UsageError(f"{store.out} holds no run of a pipeline (no {STAGES}/ folder)")
    states = {status.key: status.state for status in runner.status()}
    keep = needed_files(runner, states)
    usages = [
        usage(key, states.get(key, "not in the spec"), files_under(store.stage_dir(key)), keep)
        for key in storage.folders(store.root)
    ]
    usages.append(usage(SCRATCH, "scratch", files_under(store.work / SCRATCH), keep))
    loose = {
        join(store.root, name): size
        for name, size in storage.files(store.root).items()
        if "/" not in name and name not in RUNNER_FILES
    }
    if loose:
        usages.append(usage("(loose files)", "not the runner's", loose, set()))
    return usages


def collect(spec: PipelineSpec, out: Location, dry_run: bool = False) -> list[StageUsage]:
    """Survey ``out`` for ``spec`` and, unless ``dry_run``, delete what no current stage needs,
    holding the folder's lock so that no run is writing meanwhile."""
    if dry_run:
        return survey(spec, out)
    with folder_lock(out):
        usages = survey(spec, out)
        for found in usages:
            for path in found.unneeded:
                storage.remove(path)
        store = Store(out)
        for key in storage.folders(store.root):
            storage.remove_empty_folders(store.stage_dir(key))
        storage.remove_empty_folders(store.work / SCRATCH)
    return usages
