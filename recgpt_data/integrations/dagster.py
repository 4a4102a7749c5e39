"""Dagster assets for a pipeline spec, for teams that orchestrate with Dagster.

Each stage of the spec becomes one asset named by its key, depending on the stages whose tables it
reads (a stage that summarises the run depends on every earlier one). Its code version is the
fingerprint of its code and parameters (name, version, source file, canonical parameters, seed,
buckets), so Dagster marks it changed exactly when the runner would; its data version is the
runner's full fingerprint, inputs included.

Materialising an asset runs, through the runner (the same caching, atomic writes and stats), that
stage and every stage it needs, in spec order: stages already current are skipped, so materialising
``instruct_pairs`` alone on an empty folder builds ingest through the split and then the pairs, and
never the pre-training shards. Each materialisation carries the stage's stats and its output rows
per dataset as metadata, and two asset checks read from the stats: ``dropped_rows_kept`` (every
drop reason whose rows the stage kept has as many rows as it counted) and ``has_output`` (no table
the stage wrote is empty).

The assets are not Dagster-partitioned by dataset: a stage's output is one fingerprinted table over
every dataset, some stages need all datasets at once (the split holds benchmark interactions out
across releases, the pre-training writer shuffles globally and meets a token budget), and the
runner already splits the per-dataset stages into dataset buckets itself.

    from recgpt_data.integrations.dagster import definitions
    defs = definitions("pipelines/demo.toml", "out/demo")

Needs the ``dagster`` extra: ``pip install 'recgpt-data[dagster]'``. (No ``from __future__ import
annotations`` here: Dagster reads the asset function's ``context`` annotation at definition time.)
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from recgpt_data.pipeline.dropped import stage_dropped
from recgpt_data.pipeline.fingerprint import digest, source_sha256
from recgpt_data.pipeline.planner import Planned
from recgpt_data.pipeline.runner import Runner, RunResult
from recgpt_data.pipeline.spec import PipelineSpec, load_spec
from recgpt_data.pipeline.store import Marker, Store
from recgpt_data.stage import BLANKED, DROPPED

GROUP = "recgpt"
CHECKS = (
    ("dropped_rows_kept", "every drop reason whose rows the stage kept has as many rows as its stats count"),
    ("has_output", "no table the stage wrote is empty"),
)


def code_version(spec: PipelineSpec, planned: Planned) -> str:
    """The part of a stage's fingerprint that Dagster can know before running: code and parameters."""
    return digest(
        {
            "stage": planned.definition.name,
            "version": planned.definition.version,
            "source": source_sha256(planned.definition.fn),
            "params": planned.params.model_dump(mode="json"),
            "seed": spec.seed,
            "partitions": planned.partitions,
        }
    )[:16]


def upstream_of(runner: Runner, index: int) -> list[str]:
    """The asset's dependencies: every earlier stage for a summarising stage, else the earlier stages
    that last wrote a table the ``index``-th stage reads (its direct inputs)."""
    planned = runner.planned[index]
    if planned.definition.summarises:
        return [p.key for p in runner.planned[:index]]
    writers: dict[str, str] = {}
    for earlier in runner.planned[:index]:
        writers.update({table: earlier.key for table in earlier.definition.writes})
    definition = planned.definition
    return sorted({writers[t] for t in definition.reads + definition.optional_reads if t in writers})


def needed(runner: Runner, index: int) -> list[Planned]:
    """The ``index``-th stage and every stage it needs, directly or through others, in spec order."""
    planned = runner.planned[index]
    keys = runner.plan.upstream(planned)
    return [p for p in runner.planned[:index] if p.key in keys] + [planned]


def materialise(runner: Runner, index: int) -> RunResult:
    """Run the ``index``-th stage and what it needs (stages already current are skipped)."""
    with runner.lock():
        try:
            return runner.run_stages(needed(runner, index), None, False)
        finally:
            runner.executor.close()


def rows_per_dataset(out: Path, marker: Marker) -> dict[str, dict[str, int]]:
    """Rows per dataset of each output table (not the dropped or blanked rows) that has a ``dataset``
    column."""
    found = {}
    for name, ref in sorted(marker.refs().items()):
        files = [out / f.path for f in ref.files]
        if name.startswith((DROPPED, BLANKED)) or not files or "dataset" not in pl.scan_parquet(files).collect_schema():
            continue
        counts = pl.scan_parquet(files).group_by("dataset").agg(pl.len()).sort("dataset").collect()
        found[name] = dict(counts.iter_rows())
    return found


def drops_check(store: Store, marker: Marker, stats: Mapping[str, Any]) -> dg.AssetCheckResult:
    """``dropped_rows_kept``: the rows the stage of ``marker`` (its success record) kept per drop
    reason against the counts in its stats."""
    kept: dict[str, int] = {}
    for item in stage_dropped(store, marker):
        for reason, n in item.by_reason().items():
            kept[reason] = kept.get(reason, 0) + n
    counted = {reason: n for reason, n in stats["dropped"].items() if n}
    wrong = {r: {"counted": counted.get(r, 0), "kept": n} for r, n in kept.items() if counted.get(r, 0) != n}
    return dg.AssetCheckResult(
        check_name="dropped_rows_kept",
        passed=not wrong,
        metadata={
            "counted": dg.MetadataValue.json(counted),
            "kept": dg.MetadataValue.json(kept),
            "mismatched": dg.MetadataValue.json(wrong),
        },
    )


def output_check(stats: Mapping[str, Any]) -> dg.AssetCheckResult:
    """``has_output``: a warning for each table the stage wrote with no rows."""
    empty = sorted(name for name, n in stats["rows_out"].items() if n == 0)
    return dg.AssetCheckResult(
        check_name="has_output",
        passed=not empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"empty_tables": dg.MetadataValue.json(empty)},
    )


def stage_asset(spec: PipelineSpec, runner: Runner, index: int) -> dg.AssetsDefinition:
    """The asset for the ``index``-th stage of ``spec``."""
    planned = runner.planned[index]
    key = planned.key

    @dg.asset(
        name=key,
        group_name=GROUP,
        deps=upstream_of(runner, index),
        code_version=code_version(spec, planned),
        description=(planned.definition.fn.__doc__ or key).strip().splitlines()[0],
        check_specs=[dg.AssetCheckSpec(name, asset=key, description=text) for name, text in CHECKS],
    )
    def asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        result = materialise(runner, index)
        ran = [k for k, state in result.states.items() if state == "ran"]
        stats = result.stats[key]
        marker = runner.store.marker(key)
        if marker is None:
            raise RuntimeError(f"stage {key} finished without its success record")
        context.log.info(f"{key}: ran {', '.join(ran) or 'nothing (all current)'}; rows out {stats['rows_out']}")
        return dg.MaterializeResult(
            metadata={
                "rows_in": dg.MetadataValue.json(stats["rows_in"]),
                "rows_out": dg.MetadataValue.json(stats["rows_out"]),
                "rows_per_dataset": dg.MetadataValue.json(rows_per_dataset(runner.out, marker)),
                "dropped": dg.MetadataValue.json(stats["dropped"]),
                "changed": dg.MetadataValue.json(stats["changed"]),
                "stages_run": dg.MetadataValue.json(ran),
                "seconds": dg.MetadataValue.float(float(stats["seconds"])),
                "bytes_written": dg.MetadataValue.int(int(stats["bytes_written"])),
            },
            data_version=dg.DataVersion(marker.fingerprint),
            check_results=[drops_check(runner.store, marker, stats), output_check(stats)],
        )

    return asset


def assets(spec_path: str | Path, out: str | Path) -> list[dg.AssetsDefinition]:
    """One asset per stage of the spec at ``spec_path``, writing under ``out``."""
    spec = load_spec(spec_path)
    runner = Runner(spec, out)
    return [stage_asset(spec, runner, index) for index in range(len(runner.planned))]


def definitions(spec_path: str | Path, out: str | Path) -> dg.Definitions:
    """Dagster definitions holding the spec's assets (point ``dagster dev -f`` at a file calling it)."""
    return dg.Definitions(assets=assets(spec_path, out))
