"""The runner: executes a spec's stages in order, skipping those that are current.

It is the orchestrator of the pipeline's parts: the planner (:mod:`~recgpt_data.pipeline.planner`:
the spec checked and turned into a plan before anything runs), the status
(:mod:`~recgpt_data.pipeline.status`: each stage's fingerprint and whether it is current), the
executor (:mod:`~recgpt_data.pipeline.executor`: a stage run whole or in buckets on an engine) and
the store (:mod:`~recgpt_data.pipeline.store`: the layout under the output folder and its records).
The runner holds the folder's lock, lends each stage its :class:`~recgpt_data.stage.Context`,
publishes what it wrote for the final folder, records it and writes ``stats.json`` after each stage.

A run killed at any point (tests do it with ``RECGPT_KILL_AT=stage:<key>:before|prepared|mid|publish|after``,
see :mod:`~recgpt_data.pipeline.crash`) leaves no partial file visible, and a rerun finishes with
the same bytes as a run that was never interrupted.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from recgpt_data.engines import Engine
from recgpt_data.errors import UsageError
from recgpt_data.io.lock import folder_lock
from recgpt_data.io.storage import join, location_of
from recgpt_data.pipeline.crash import kill_point
from recgpt_data.pipeline.executor import Executor, Reporter, SilentReporter
from recgpt_data.pipeline.planner import Plan, PlanError, Planned, plan
from recgpt_data.pipeline.run_warnings import run_warnings, stage_warnings
from recgpt_data.pipeline.spec import PipelineSpec
from recgpt_data.pipeline.status import DONE, StageStatus, inputs_of, judge, plan_status, stage_fingerprint
from recgpt_data.pipeline.store import Marker, Store, TableRef
from recgpt_data.stage import Context


@dataclass
class RunResult:
    """What a run did: each stage's stats and state (``ran`` or ``cached``), and the final tables."""

    stats: dict[str, dict] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    tables: dict[str, pl.LazyFrame] = field(default_factory=dict)


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
        self.out = location_of(out)
        self.plan: Plan = plan(spec)
        self.store = Store(self.out)
        self.reporter = reporter or SilentReporter()
        self.executor = Executor(self.store, engine, self.reporter)
        self.cache = self.store.hash_cache()

    @property
    def planned(self) -> tuple[Planned, ...]:
        return self.plan.stages

    def selected(self, until: str | None, only: str | None) -> list[Planned]:
        """The stages a run goes through: up to ``until`` or ``only`` (inclusive), else all."""
        keys = self.plan.keys
        for flag, value in (("--until", until), ("--only", only)):
            if value is not None and value not in keys:
                raise UsageError(f"{flag} {value!r} is not a stage of {self.spec.name}: {', '.join(keys)}")
        if until is not None and only is not None:
            raise UsageError("--until and --only do not go together")
        last = until or only
        return list(self.planned[: keys.index(last) + 1] if last else self.planned)

    def check_settings(self) -> None:
        """Refuse, before any stage runs, settings this machine cannot honour (a missing tokenizer)."""
        problems = self.plan.settings.problems()
        if problems:
            raise PlanError(problems)

    def run(self, until: str | None = None, only: str | None = None, force: bool = False) -> RunResult:
        """Run the selected stages, skipping those whose outputs are current (unless forced); the
        workers of an engine the runner started itself stop at the end."""
        selected = self.selected(until, only)
        self.check_settings()
        with self.lock():
            try:
                return self.run_stages(selected, only, force)
            finally:
                self.executor.close()

    def lock(self) -> AbstractContextManager[None]:
        """Hold the output folder for this run (the lock ``recgpt-data ingest`` takes too)."""
        return folder_lock(self.out)

    def run_stages(self, selected: list[Planned], only: str | None, force: bool) -> RunResult:
        """Run ``selected`` in order (see :meth:`run`)."""
        result = RunResult()
        tables: dict[str, TableRef] = {}
        earlier: dict[str, str] = {}
        for planned in selected:
            found = self.store.marker(planned.key)
            if only is not None and planned.key != only:
                if found is None or not self.store.outputs_present(found):
                    raise UsageError(
                        f"--only {only}: stage {planned.key} has no cached output; run without --only first"
                    )
                marker, state = found, "cached"
            else:
                fingerprint = stage_fingerprint(self.plan, planned, tables, earlier, self.cache)
                self.cache.save()
                current = judge(planned.key, found, fingerprint, self.store).state == DONE
                if found is not None and current and not force and only is None:
                    marker, state = found, "cached"
                else:
                    marker, state = self.execute(planned, fingerprint, tables, result.stats, found), "ran"
            tables.update(marker.refs())
            earlier[planned.key] = marker.fingerprint
            result.stats[planned.key] = dict(marker.stats)
            result.states[planned.key] = state
            self.write_stats(result.stats)
            self.reporter.stage_finished(planned.key, state, marker.stats)
        result.tables = {name: self.store.scan(ref) for name, ref in tables.items()}
        return result

    def context(self, planned: Planned, stats_so_far: Mapping[str, dict]) -> Context:
        """What stage ``planned`` is lent besides its tables."""
        settings = self.plan.settings
        return Context(
            seed=self.spec.seed,
            spec_dir=self.spec.folder,
            out_dir=self.store.staged(planned.key),
            scratch=self.store.scratch(planned.key),
            folder=self.store.final_folder(),
            stages=dict(stats_so_far),
            tokenizer=settings.tokenizer,
            tokenizer_name=settings.tokenizer_name,
        )

    def execute(
        self,
        planned: Planned,
        fingerprint: str,
        tables: Mapping[str, TableRef],
        stats_so_far: Mapping[str, dict],
        old: Marker | None,
    ) -> Marker:
        """Run one stage from scratch (keeping finished buckets of the same fingerprint) and record it."""
        key = planned.key
        kill_point(key, "before")
        self.store.reset(key, fingerprint, old)
        context = self.context(planned, stats_so_far)
        started = time.perf_counter()
        inputs = inputs_of(planned, tables)
        written, stats, where = self.executor.run(planned, fingerprint, inputs, context)
        shutil.rmtree(context.scratch, ignore_errors=True)
        published = self.store.publish(key)
        kill_point(key, "publish")
        record = stats.to_dict()
        stage_dir = self.store.stage_dir(key)
        record["warnings"] = stage_warnings(
            key,
            planned.definition.heuristic,
            {name: self.store.paths(ref) for name, ref in inputs.items()},
            {name: [join(stage_dir, f.path) for f in t.files] for name, t in written.items()},
            record["info"],
        )
        record["seconds"] = round(time.perf_counter() - started, 3)
        record.update(where)  # where a whole stage and a prepare step's tasks ran (a bucket's record names its worker)
        record["bytes_written"] = sum(f.size for t in written.values() for f in t.files) + sum(
            f.size for f in published
        )
        definition = planned.definition
        marker = Marker(key, definition.name, definition.version, fingerprint, written, tuple(published), record)
        self.store.write_marker(marker)
        kill_point(key, "after")
        return marker

    def write_stats(self, stats: Mapping[str, dict]) -> None:
        """Write ``stats.json``: the pipeline, its seed, its warnings, what stages declare the run's
        own (the report's ``corpus``) and each stage's stats."""
        document: dict[str, Any] = {"pipeline": self.spec.name, "seed": self.spec.seed, "warnings": run_warnings(stats)}
        for planned in self.planned:
            info = stats.get(planned.key, {}).get("info", {})
            document.update({name: info[name] for name in planned.definition.stats_keys if name in info})
        document["stages"] = dict(stats)
        self.store.write_stats(document)

    def status(self) -> list[StageStatus]:
        """Each stage's state in the output folder, without running anything."""
        self.check_settings()
        statuses = plan_status(self.plan, self.store, self.cache)
        if self.store.has_run():
            self.cache.save()
        return statuses


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
