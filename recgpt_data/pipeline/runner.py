"""The runner: executes a spec's stages in order, owning all I/O around them.

Each stage receives the latest version of every named table produced so far (as lazy scans of
parquet), returns new tables and stats; the runner writes each output table atomically under
``out/.stages/<stage>/`` and the per-stage stats to ``out/stats.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recgpt_data import stage as registry
from recgpt_data.errors import UsageError
from recgpt_data.io.parquet import write_parquet, write_text
from recgpt_data.pipeline.spec import PipelineSpec
from recgpt_data.stage import Context, StageStats


@dataclass
class RunResult:
    """What a run did: each stage's stats, in order, and the final tables."""

    stats: dict[str, dict] = field(default_factory=dict)
    tables: dict[str, pl.LazyFrame] = field(default_factory=dict)


def run_spec(spec: PipelineSpec, out: str | Path, until: str | None = None) -> RunResult:
    """Run ``spec``'s stages in order (through ``until`` if given), writing under ``out``."""
    out = Path(out)
    keys = [s.key for s in spec.stages]
    if until is not None and until not in keys:
        raise UsageError(f"--until {until!r} is not a stage of {spec.name}: {', '.join(keys)}")
    result = RunResult()
    for stage_spec in spec.stages:
        definition = registry.get(stage_spec.stage)
        try:
            params = definition.params(**stage_spec.params)
        except Exception as exc:  # noqa: BLE001 - pydantic's message names the bad field
            raise UsageError(f"stage {stage_spec.key}: bad parameters: {exc}") from None
        missing = [t for t in definition.reads if t not in result.tables]
        if missing:
            raise UsageError(f"stage {stage_spec.key} reads {', '.join(missing)}, which no earlier stage writes")
        context = Context(
            seed=spec.seed, spec_dir=spec.folder, out_dir=out, scratch=out / ".scratch" / stage_spec.key
        )
        started = time.perf_counter()
        output = definition.fn({t: result.tables[t] for t in definition.reads}, params, context)
        stats: StageStats = output.stats
        for name, frame in output.tables.items():
            target = out / ".stages" / stage_spec.key / f"{name}.parquet"
            write_parquet(frame.collect() if isinstance(frame, pl.LazyFrame) else frame, target)
            result.tables[name] = pl.scan_parquet(target)
            stats.rows_out.setdefault(name, registry.count(result.tables[name]))
        stats.info["seconds"] = round(time.perf_counter() - started, 3)
        result.stats[stage_spec.key] = stats.to_dict()
        write_text(json.dumps({"pipeline": spec.name, "stages": result.stats}, indent=2) + "\n", out / "stats.json")
        if stage_spec.key == until:
            break
    return result
