"""The planner: a spec turned into a :class:`Plan`, with every check that needs no stage to run made
before the first one does.

Each stage is looked up and its parameters validated; every table it reads must be written by an
earlier stage; the datasets its parameters name (a benchmark's) must come from an ingest source of
the spec; ``RECGPT_KILL_AT`` must name a stage and point of the spec. Every problem is collected
and reported at once (:class:`PlanError`). The spec-wide settings are resolved relative to the spec
file, whatever the working directory (:class:`Settings`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from recgpt_data import stages
from recgpt_data.errors import UsageError
from recgpt_data.pipeline.crash import kill_point_problem
from recgpt_data.pipeline.spec import PipelineSpec, StageSpec, resolve_path
from recgpt_data.stage import Params, StageDef
from recgpt_data.tokenizer import DEFAULT_NAME, DEFAULT_TOKENIZER, tokenizer_sha256

RUNNER_TABLES = "out"  # table names the runner keeps for itself: this and any starting with "_"


class PlanError(UsageError):
    """A spec that cannot run: every problem found, one a line."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    """The spec-wide settings, resolved: the tokenizer file (``declared`` as the spec wrote it,
    ``None`` for the bundled GPT-NeoX-20B)."""

    tokenizer: Path = DEFAULT_TOKENIZER
    declared: str | None = None

    @cached_property
    def tokenizer_name(self) -> str:
        """How manifests name the tokenizer: GPT-NeoX-20B's name where the file holds its bytes,
        else the path as the spec declares it (relative to the spec file unless absolute)."""
        if self.declared is None or tokenizer_sha256(self.tokenizer) == tokenizer_sha256(DEFAULT_TOKENIZER):
            return DEFAULT_NAME
        return self.declared

    def problems(self) -> list[str]:
        """What is wrong with the settings on this machine (a file that is not there)."""
        if not self.tokenizer.is_file():
            return [f"tokenizer {self.declared or 'default'}: no tokenizer.json at {self.tokenizer}"]
        return []


def resolve_settings(spec: PipelineSpec) -> Settings:
    """``spec``'s settings with paths resolved relative to the spec file (a folder holding a
    ``tokenizer.json`` stands for it)."""
    if spec.tokenizer is None:
        return Settings()
    path = resolve_path(spec.tokenizer, spec.folder)
    return Settings(path / "tokenizer.json" if path.is_dir() else path, spec.tokenizer)


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

    @property
    def table_reads(self) -> tuple[str, ...]:
        """Every table it may read: the required ones, then the optional ones."""
        return self.definition.reads + self.definition.optional_reads


@dataclass(frozen=True)
class Plan:
    """A spec's stages in order, each looked up and validated, and its resolved settings."""

    spec: PipelineSpec
    stages: tuple[Planned, ...]
    settings: Settings

    def __iter__(self) -> Iterator[Planned]:
        return iter(self.stages)

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.stages]

    def upstream(self, planned: Planned) -> set[str]:
        """The keys of the earlier stages ``planned`` depends on: every one for a stage that
        summarises the run, else those whose tables it reads, directly or through others."""
        index = self.keys.index(planned.key)
        if planned.definition.summarises:
            return set(self.keys[:index])
        writers: dict[str, str] = {}
        needed: dict[str, set[str]] = {}
        for other in self.stages[: index + 1]:
            direct = {writers[t] for t in other.table_reads if t in writers}
            needed[other.key] = direct.union(*(needed[d] for d in direct))
            writers.update({t: other.key for t in other.definition.writes})
        return needed[planned.key]


def plan_stage(spec: PipelineSpec, stage_spec: StageSpec) -> Planned:
    """One stage looked up and its parameters validated."""
    try:
        definition = stages.get(stage_spec.stage)
    except KeyError as exc:
        raise UsageError(f"stage {stage_spec.key}: {exc.args[0]}") from None
    try:
        params = definition.params(**stage_spec.params)
    except Exception as exc:  # noqa: BLE001 - pydantic's message names the bad field
        raise UsageError(f"stage {stage_spec.key}: bad parameters: {exc}") from None
    reserved = [t for t in definition.writes if t == RUNNER_TABLES or t.startswith("_")]
    if reserved:
        raise UsageError(f"stage {stage_spec.key}: table names 'out' and '_*' are the runner's: {reserved}")
    return Planned(stage_spec, definition, params, spec.partitions_of(stage_spec) if definition.partition else None)


def unread_tables(planned: list[Planned]) -> list[str]:
    """A problem for each table a stage reads that no earlier stage writes."""
    written: set[str] = set()
    problems = []
    for p in planned:
        missing = [t for t in p.definition.reads if t not in written]
        if missing:
            problems.append(f"stage {p.key} reads {', '.join(missing)}, which no earlier stage writes")
        written.update(p.definition.writes)
    return problems


def unmade_datasets(planned: list[Planned]) -> list[str]:
    """A problem for each dataset a stage names that no earlier ingest source can produce (where
    the spec says which datasets its sources produce)."""
    made: list[str] = []
    problems = []
    for p in planned:
        if made:
            unknown = [d for d in p.params.datasets_needed() if not any(d == m or d.startswith(f"{m}/") for m in made)]
            if unknown:
                problems.append(
                    f"stage {p.key} names dataset {', '.join(unknown)}, which no earlier ingest source produces "
                    f"(sources: {', '.join(made)})"
                )
        made.extend(p.params.datasets_made())
    return problems


def plan_stages(spec: PipelineSpec) -> tuple[list[Planned], list[str]]:
    """Every stage of ``spec`` that looks up and validates, and a problem for each one that does not."""
    problems: list[str] = []
    planned: list[Planned] = []
    for stage_spec in spec.stages:
        try:
            planned.append(plan_stage(spec, stage_spec))
        except UsageError as exc:
            problems.append(str(exc))
    return planned, problems


def plan(spec: PipelineSpec) -> Plan:
    """``spec`` as a plan, or a :class:`PlanError` listing every problem found."""
    planned, problems = plan_stages(spec)
    if not problems:
        problems += unread_tables(planned) + unmade_datasets(planned)
    kill = kill_point_problem([s.key for s in spec.stages])
    if kill is not None:
        problems.append(kill)
    if problems:
        raise PlanError(problems)
    return Plan(spec, tuple(planned), resolve_settings(spec))
