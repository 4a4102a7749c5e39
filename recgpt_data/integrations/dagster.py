"""Dagster assets for a pipeline spec, for teams that orchestrate with Dagster.

Each stage of the spec becomes one asset named by its key, depending on the stages whose tables it
reads (a stage that summarises the run depends on every earlier one). Its code version is the
fingerprint of its code and parameters (name, version, source file, canonical parameters, seed, buckets), so
Dagster marks it changed exactly when the runner would; its data version is the runner's full
fingerprint, inputs included. Materialising an asset runs that one stage through the runner (the
same caching, atomic writes and stats), from the cached outputs of the stages it depends on.

    from recgpt_data.integrations.dagster import definitions
    defs = definitions("pipelines/demo.toml", "out/demo")

Needs the ``dagster`` extra: ``pip install 'recgpt-data[dagster]'``.
"""

from pathlib import Path

import dagster as dg
from dagster import AssetExecutionContext

from recgpt_data.pipeline.fingerprint import digest, source_sha256
from recgpt_data.pipeline.runner import Planned, Runner, read_marker, run_spec
from recgpt_data.pipeline.spec import PipelineSpec, load_spec

GROUP = "recgpt"


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


def readers_of(runner: Runner, index: int) -> list[str]:
    """The earlier stages that last wrote a table the ``index``-th stage reads (its direct inputs)."""
    writers: dict[str, str] = {}
    for earlier in runner.planned[:index]:
        writers.update({table: earlier.key for table in earlier.definition.writes})
    definition = runner.planned[index].definition
    return sorted({writers[t] for t in definition.reads + definition.optional_reads if t in writers})


def stage_asset(spec: PipelineSpec, runner: Runner, index: int) -> dg.AssetsDefinition:
    """The asset for the ``index``-th stage of ``spec``."""
    planned = runner.planned[index]
    upstream = [p.key for p in runner.planned[:index]] if planned.definition.summarises else readers_of(runner, index)

    @dg.asset(
        name=planned.key,
        group_name=GROUP,
        deps=upstream,
        code_version=code_version(spec, planned),
        description=(planned.definition.fn.__doc__ or planned.key).strip().splitlines()[0],
    )
    def materialise(context: AssetExecutionContext) -> dg.MaterializeResult:
        result = run_spec(spec, runner.out, only=planned.key)
        stats = result.stats[planned.key]
        marker = read_marker(runner.stage_dir(planned.key))
        context.log.info(f"{planned.key}: rows out {stats['rows_out']}, dropped {stats['dropped']}")
        return dg.MaterializeResult(
            metadata={
                "rows_in": dg.MetadataValue.json(stats["rows_in"]),
                "rows_out": dg.MetadataValue.json(stats["rows_out"]),
                "dropped": dg.MetadataValue.json(stats["dropped"]),
                "seconds": dg.MetadataValue.float(float(stats["seconds"])),
                "bytes_written": dg.MetadataValue.int(int(stats["bytes_written"])),
            },
            data_version=dg.DataVersion(marker["fingerprint"]) if marker else None,
        )

    return materialise


def assets(spec_path: str | Path, out: str | Path) -> list[dg.AssetsDefinition]:
    """One asset per stage of the spec at ``spec_path``, writing under ``out``."""
    spec = load_spec(spec_path)
    runner = Runner(spec, out)
    return [stage_asset(spec, runner, index) for index in range(len(runner.planned))]


def definitions(spec_path: str | Path, out: str | Path) -> dg.Definitions:
    """Dagster definitions holding the spec's assets (point ``dagster dev -f`` at a file calling it)."""
    return dg.Definitions(assets=assets(spec_path, out))
