"""Whether a stage is current: one algorithm, used by the runner to decide what runs and by
``recgpt-data status`` to say what would.

A stage's fingerprint (:func:`stage_fingerprint`) is a function of its code, parameters, seed,
buckets, the spec-wide settings it uses, the raw files its path parameters name, and the tables it
reads: their files and the fingerprints of the stages that wrote them. A stage is ``done`` when its
success record holds that fingerprint and every file it lists is there (:func:`judge`). The status
of a whole spec (:func:`plan_status`) walks the stages in order as a run would, handing each the
tables of the stages before it with the fingerprints those stages would run with now: a stage
whose upstream changed is stale because its fingerprint changes, exactly as in a run; one whose
upstream never finished has no inputs yet and reruns after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from recgpt_data.pipeline.fingerprint import HashCache, digest, raw_inputs, source_sha256
from recgpt_data.pipeline.planner import Plan, Planned
from recgpt_data.pipeline.store import Marker, Store, TableRef, without_attempt

DONE, STALE, MISSING = "done", "stale", "missing"


@dataclass(frozen=True)
class StageStatus:
    """Where a stage stands in an output folder: ``done``, ``stale`` or ``missing``, and why."""

    key: str
    state: str
    reason: str


def inputs_of(planned: Planned, tables: Mapping[str, TableRef]) -> dict[str, TableRef]:
    """The tables ``planned`` reads: its required ones (the plan checked that earlier stages write
    them), then the optional ones that an earlier stage wrote."""
    return {name: tables[name] for name in planned.table_reads if name in tables}


def stage_fingerprint(
    plan: Plan, planned: Planned, tables: Mapping[str, TableRef], earlier: Mapping[str, str], cache: HashCache
) -> str:
    """The fingerprint ``planned`` runs with, given the tables it would read and the fingerprints
    of the earlier stages (which only a stage that summarises the run depends on)."""
    inputs = inputs_of(planned, tables)
    definition = planned.definition
    settings = {"tokenizer": cache.sha256(plan.settings.tokenizer)} if "tokenizer" in definition.settings else {}
    return digest(
        {
            "stage": definition.name,
            "version": definition.version,
            "source": source_sha256(definition.fn),
            "params": planned.params.model_dump(mode="json"),
            "seed": plan.spec.seed,
            "partitions": planned.partitions,
            "settings": settings,
            "upstream": {name: ref.fingerprint for name, ref in inputs.items()},
            "inputs": {
                name: [{**f.to_dict(), "path": without_attempt(f.path)} for f in ref.files]
                for name, ref in inputs.items()
            },
            "raw": raw_inputs(planned.params, plan.spec.folder, cache),
            "earlier": dict(earlier) if definition.summarises else {},
        }
    )


def judge(key: str, marker: Marker | None, fingerprint: str, store: Store) -> StageStatus:
    """Whether stage ``key``, which would run with ``fingerprint``, is current in ``store``."""
    if marker is None:
        return StageStatus(key, MISSING, "never finished")
    if not store.outputs_present(marker):
        return StageStatus(key, STALE, "an output file is missing or changed")
    if marker.fingerprint != fingerprint:
        return StageStatus(key, STALE, "code, parameters or inputs changed")
    return StageStatus(key, DONE, f"{marker.stats.get('seconds', 0)} s")


def plan_status(plan: Plan, store: Store, cache: HashCache) -> list[StageStatus]:
    """Each stage of ``plan``: done, stale or missing in ``store``, without running anything."""
    statuses = []
    tables: dict[str, TableRef] = {}
    earlier: dict[str, str] = {}
    unfinished: list[str] = []
    for planned in plan:
        marker = store.marker(planned.key)
        upstream = plan.upstream(planned)
        blocked = [key for key in unfinished if key in upstream]
        if blocked and marker is not None:
            status = StageStatus(planned.key, STALE, f"reruns after {blocked[0]}, upstream, which never finished")
        elif blocked:
            status = StageStatus(planned.key, MISSING, "never finished")
        else:
            fingerprint = stage_fingerprint(plan, planned, tables, earlier, cache)
            status = judge(planned.key, marker, fingerprint, store)
            earlier[planned.key] = fingerprint
            if marker is not None:
                tables.update(marker.refs(fingerprint))
        if marker is None or blocked:
            unfinished.append(planned.key)
        statuses.append(status)
    return statuses
