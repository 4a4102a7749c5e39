"""The rows a run's stages dropped or blanked, read back from the output folder.

Every stage that drops rows from a table ``T`` returns them, each with its ``drop_reason``, and the
runner keeps them beside the stage's outputs as table ``dropped_T``; a stage that blanks values
(a review text in a language not allowed, a duplicate text) keeps each such row the same way as
``blanked_T``: its keys, the column, the original value and its ``blank_reason``. This module finds
them in the finished stages' success records, in the order the run reported them (``stats.json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recgpt_data.errors import UsageError
from recgpt_data.io.storage import join
from recgpt_data.pipeline.store import STAGES, STATS, Marker, Store, read_json
from recgpt_data.stage import BLANK_REASON, BLANKED, DROP_REASON, DROPPED


@dataclass(frozen=True)
class Dropped:
    """The rows one stage dropped from (or blanked in) one table, as a lazy scan, and the column
    that holds each row's reason."""

    stage: str
    table: str
    rows: pl.LazyFrame
    reason: str = DROP_REASON

    def by_reason(self) -> dict[str, int]:
        """Rows per reason, sorted by reason."""
        counts = self.rows.group_by(self.reason).agg(pl.len()).sort(self.reason).collect()
        return dict(counts.iter_rows())


def stage_dropped(store: Store, marker: Marker, blanked: bool = False) -> list[Dropped]:
    """The tables of dropped rows (with ``blanked``, of blanked rows) one finished stage kept, by
    table name."""
    prefix, reason = (BLANKED, BLANK_REASON) if blanked else (DROPPED, DROP_REASON)
    return [
        Dropped(marker.key, name[len(prefix) :], store.scan(ref), reason)
        for name, ref in sorted(marker.refs().items())
        if name.startswith(prefix)
    ]


def dropped_rows(out: str | Path, blanked: bool = False) -> list[Dropped]:
    """Every table of dropped rows (with ``blanked``, of blanked rows) the finished stages of the
    run in ``out`` kept, in stage order."""
    store = Store(out)
    if not store.has_run():
        raise UsageError(f"{store.out} holds no pipeline run (no {STAGES}/ folder)")
    stats = read_json(join(store.out, STATS))
    order = list(stats["stages"]) if stats is not None else []
    markers = sorted(store.markers(), key=lambda m: (order.index(m.key) if m.key in order else len(order), m.key))
    return [item for marker in markers for item in stage_dropped(store, marker, blanked)]
