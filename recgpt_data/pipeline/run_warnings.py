"""The warnings a run raises: a judgement call that removed much of a dataset, a stage that removed
nearly all of one, and what stages say themselves.

Each warning is a JSON object in its stage's record (``stats.json``: ``stages.<key>.warnings``, and
all of them in the run's ``warnings`` list), shown under the run summary and in the dataset card:

- ``heuristic``: a stage registered with ``heuristic=True`` (dedup, langid) dropped or changed more
  than :data:`HEURISTIC_SHARE` of one dataset's rows for one reason;
- ``mass_drop``: any stage dropped at least :data:`MASS_DROP_SHARE` of one dataset's rows of a table
  (all reasons together; ``reasons`` has each);
- ``stage``: a line a stage wrote to ``info["warnings"]`` (ingest: a dataset without items).

Drops are counted from the rows the stage kept as ``dropped_<table>`` (their ``dataset`` and
``drop_reason``) against the dataset's rows in the table it read; changes come from the stage's
``info["by_dataset"]`` (``{dataset: {"rows": n, "changed": {reason: n}}}``, see
:func:`recgpt_data.stage.changes_by_dataset`). Tables without a ``dataset`` column are not counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from recgpt_data.stage import DROP_REASON, DROPPED

HEURISTIC_SHARE = 0.05  # a heuristic rule removing more than this share of a dataset is shown
MASS_DROP_SHARE = 0.90  # a stage dropping at least this share of a dataset is shown

RunWarning = dict[str, Any]


def rows_by(files: Sequence[Path], *columns: str) -> dict[tuple[str, ...], int]:
    """Rows of the parquet ``files`` per value of ``dataset`` and ``columns``; empty where the
    table has no ``dataset`` column."""
    scan = pl.scan_parquet(list(files))
    if "dataset" not in scan.collect_schema().names():
        return {}
    counts = scan.group_by("dataset", *columns).agg(pl.len()).collect()
    return {tuple(row[:-1]): row[-1] for row in counts.iter_rows()}


def share(part: int, whole: int) -> str:
    """``part`` of ``whole`` as the warnings print it."""
    return f"{part:,} of {whole:,} ({part / whole:.1%})"


def stage_warnings(
    key: str,
    heuristic: bool,
    inputs: Mapping[str, Sequence[Path]],
    written: Mapping[str, Sequence[Path]],
    info: Mapping[str, Any],
) -> list[RunWarning]:
    """The warnings of one finished stage: ``inputs`` are the files of the tables it read,
    ``written`` those of every table it wrote (its ``dropped_<table>`` among them)."""
    found: list[RunWarning] = [
        {"kind": "stage", "stage": key, "message": f"{key}: {m}"} for m in info.get("warnings", [])
    ]
    for name in sorted(written):
        table = name.removeprefix(DROPPED)
        if not name.startswith(DROPPED) or table not in inputs:
            continue
        totals = rows_by(inputs[table])
        drops = rows_by(written[name], DROP_REASON)
        for (dataset,), rows in sorted(totals.items()):
            reasons = {reason: n for (d, reason), n in sorted(drops.items()) if d == dataset}
            common = {"stage": key, "dataset": dataset, "table": table, "of": rows}
            if heuristic:
                found += [
                    {
                        **common,
                        "kind": "heuristic",
                        "reason": reason,
                        "rows": n,
                        "message": f"{key}: the heuristic rule {reason} dropped {share(n, rows)} {table} of {dataset} "
                        f"(`recgpt-data dropped --stage {key} --reason {reason}` lists them)",
                    }
                    for reason, n in reasons.items()
                    if n > HEURISTIC_SHARE * rows
                ]
            total = sum(reasons.values())
            if rows and total >= MASS_DROP_SHARE * rows:
                why = ", ".join(f"{reason} {n:,}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
                found.append(
                    {
                        **common,
                        "kind": "mass_drop",
                        "reasons": reasons,
                        "rows": total,
                        "message": f"{key} dropped {share(total, rows)} {table} of {dataset}: {why}",
                    }
                )
    if heuristic:
        for dataset, counts in sorted(info.get("by_dataset", {}).items()):
            rows = counts["rows"]
            found += [
                {
                    "kind": "heuristic",
                    "stage": key,
                    "dataset": dataset,
                    "table": None,
                    "reason": reason,
                    "rows": n,
                    "of": rows,
                    "message": f"{key}: the heuristic rule {reason} changed {share(n, rows)} rows of {dataset} "
                    f"(`recgpt-data dropped --blanked --stage {key}` lists blanked values)",
                }
                for reason, n in sorted(counts["changed"].items())
                if n > HEURISTIC_SHARE * rows
            ]
    return found


def run_warnings(stages: Mapping[str, Mapping[str, Any]]) -> list[RunWarning]:
    """Every warning of a run's stage records, in stage order."""
    return [warning for record in stages.values() for warning in record.get("warnings", [])]
