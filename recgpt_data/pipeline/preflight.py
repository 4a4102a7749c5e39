"""Preflight: what a run needs, checked before any work, every problem found as one line.

- The plan: every stage is registered, its parameters are valid, every table it reads is written
  by an earlier stage, every dataset it names comes from an ingest source, the tokenizer is there.
- The inputs: every path a stage's parameters declare raw paths (an ingest source's ``paths``, a
  P5 split's ``path``) exists and is readable; an ingest source's files are of its format: the first lines of each
  (about 64 KiB; of an object in a store, the start of its stream) go through the source's own
  reader and canonical mapping, and at least one record must be kept.
- The output folder: a folder (or creatable), writable, with free space for about
  :data:`DISK_FACTOR` times the raw input bytes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recgpt_data.errors import UsageError
from recgpt_data.ingest import InputFile, canonical_batch, resolve_files
from recgpt_data.io import storage
from recgpt_data.io.streams import LineBlocks
from recgpt_data.pipeline.fingerprint import declared_paths
from recgpt_data.pipeline.planner import Planned, plan_stages, resolve_settings, unmade_datasets, unread_tables
from recgpt_data.pipeline.spec import PipelineSpec, resolve_path
from recgpt_data.pipeline.store import STAGES
from recgpt_data.sources import get_source
from recgpt_data.sources.base import FileInfo, ReadState, Source, uncompressed_name

# Disk a whole build takes (every stage's tables under .stages/, the dropped rows, the final
# folder) per byte of raw input, measured with pipelines/demo.toml's stages: 6.1x on the bundled
# demo (0.5 MB in) and 5.5x on Amazon 2014 Digital Music scaled 4x (33 MB of gzip JSON in,
# benchmarks/bench_pipeline.py --chain); with a margin for inputs compressed harder than those.
DISK_FACTOR = 8.0
SNIFF_BYTES = 1 << 16


@dataclass
class Preflight:
    """What a preflight found: problems (each one line; none means the run may start) and notes on
    what was checked."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    input_bytes: int = 0


def preflight(spec: PipelineSpec, out: storage.Location) -> Preflight:
    """Check ``spec`` and its inputs, and the output folder ``out``, without running anything."""
    report = Preflight()
    for planned in check_plan(spec, report):
        inputs = check_paths(planned.key, declared_paths(planned.params), spec.folder, report)
        if planned.definition.name == "ingest":
            for source in planned.params.model_dump(mode="json")["sources"]:
                check_source(planned.key, source, spec.folder, out, report)
        report.input_bytes += inputs
    check_disk(out, report.input_bytes, DISK_FACTOR, report)
    return report


def check_plan(spec: PipelineSpec, report: Preflight) -> list[Planned]:
    """Each stage looked up and its parameters validated (a problem per stage that fails), every
    table it reads written by an earlier stage and every dataset it names produced by an ingest
    source (the planner's checks), the tokenizer there; the stages that passed."""
    passed, problems = plan_stages(spec)
    report.problems += problems
    report.problems += unread_tables(passed) + unmade_datasets(passed)
    report.problems += resolve_settings(spec).problems()
    report.notes.append(f"plan: {len(passed)} of {len(spec.stages)} stages valid")
    return passed


def check_paths(key: str, paths: list[str], folder: Path, report: Preflight) -> int:
    """Every path a stage's parameters declare (relative to the spec folder) exists and each file
    under it can be read; the bytes of those files."""
    total = 0
    for value in paths:
        if storage.is_remote(value):
            single = storage.size(value)
            listed = {"": single} if single is not None else storage.files(value)
            if not listed:
                report.problems.append(f"stage {key}: {storage.missing(value)}")
            total += sum(listed.values())
            continue
        path = resolve_path(value, folder)
        if not path.exists():
            report.problems.append(f"stage {key}: no such file or folder: {value}")
            continue
        for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
            try:
                with open(file, "rb") as handle:
                    handle.read(1)
            except OSError as exc:
                report.problems.append(f"stage {key}: cannot read {file}: {exc.strerror or exc}")
                continue
            total += file.stat().st_size
    return total


def check_source(
    key: str, source_params: dict[str, Any], folder: Path, out: storage.Location, report: Preflight
) -> None:
    """The files of one ingest source resolve (of its format, safe dataset names) and the first
    records of each are read by its own reader, at least one kept (of an object, the start of its
    stream)."""
    label = f"stage {key}, source {source_params['format']}"
    paths = [p if storage.is_remote(p) else resolve_path(p, folder) for p in source_params["paths"]]
    if not all(storage.size(p) is not None or storage.exists(p) for p in paths):
        return  # already a problem of check_paths
    try:
        source = get_source(source_params["format"])
        files, _ = resolve_files(source, paths, out, source_params.get("dataset"))
    except UsageError as exc:
        report.problems.append(f"{label}: {exc}")
        return
    for file in files:
        problem, note = first_records(source, file)
        if problem is not None:
            report.problems.append(f"{label}: {file.path}: {problem}")
        else:
            report.notes.append(f"{label}: {storage.name_of(file.path)} ({file.role.table}): {note}")


def first_records(source: Source, file: InputFile) -> tuple[str | None, str]:
    """Read the first lines of an ingest input with its role's reader; a problem where none of
    them is kept, else a note of how many were read and kept."""
    blocks = LineBlocks(file.path, SNIFF_BYTES)
    head = next(iter(blocks), None)
    if head is None:
        return f"no records in its first bytes{f' ({blocks.error})' if blocks.error else ''}", ""
    info = FileInfo(source=source.name, dataset=file.dataset, file=storage.name_of(file.path))
    kept, reasons, state = 0, Counter[str](), ReadState()
    with tempfile.TemporaryDirectory(prefix="recgpt-check-") as work:
        sample = Path(work) / uncompressed_name(storage.name_of(file.path))
        sample.write_bytes(head[1] + b"\n")
        try:
            for batch in file.role.reader(sample, state):
                rows, rejects = canonical_batch(batch, file.role, info, source)
                kept += rows.height
                reasons.update(r.reason for r in rejects)
        except Exception as exc:  # noqa: BLE001 - any reader failure is this file's problem, reported in one line
            return f"its reader fails on its first records: {type(exc).__name__}: {str(exc).splitlines()[0]}", ""
    read = state.records
    why = ", ".join(f"{reason} {n}" for reason, n in reasons.most_common(3))
    if kept == 0:
        return f"none of its first {read} records is usable ({why or 'no records parsed'})", ""
    return None, f"first {read} records read, {kept} kept"


def nearest_folder(path: Path) -> Path:
    """``path`` or its nearest existing ancestor."""
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def check_disk(out: storage.Location, input_bytes: int, factor: float, report: Preflight) -> None:
    """``out`` is (or can be made) a writable folder with room for ``factor`` x the input bytes,
    less what a previous run already wrote there (an object store is not measured)."""
    if storage.is_remote(out):
        report.notes.append(f"disk: {out} is on an object store; its space is not checked")
        return
    if out.exists() and not out.is_dir():
        report.problems.append(f"output folder {out} is a file")
        return
    base = nearest_folder(out)
    if not os.access(base, os.W_OK | os.X_OK):
        report.problems.append(f"output folder {out}: {base} is not writable")
        return
    built = sum(p.stat().st_size for p in (out / STAGES).rglob("*") if p.is_file()) if out.is_dir() else 0
    needed = max(0, int(input_bytes * factor) - built)
    free = shutil.disk_usage(base).free
    line = (
        f"disk: {gib(free)} free at {base}, the build needs about {gib(needed)} "
        f"({factor:g} x {gib(input_bytes)} of inputs{f', less {gib(built)} already built' if built else ''})"
    )
    if free < needed:
        report.problems.append(line)
    else:
        report.notes.append(line)


def gib(n: int) -> str:
    """A byte count for people."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
