"""The benchmarks' held-out (user, item) pairs, read back from a built folder's ``eval/`` files with
pyarrow and json, for expected counts independent of the library."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq


def held_out_pairs(out: Path) -> set[tuple[str, str]]:
    """Every benchmark's validation and test (user, item) pairs: from ``interactions.parquet`` where
    a benchmark wrote one, else each user's last two items of P5's ``sequential_data.txt``."""
    held = set()
    for folder in sorted((out / "eval").iterdir()):
        if (folder / "interactions.parquet").is_file():
            columns = ["user_id", "item_id", "sequential_split", "rating_split"]
            for row in pq.read_table(folder / "interactions.parquet", columns=columns).to_pylist():
                if {row["sequential_split"], row["rating_split"]} & {"validation", "test"}:
                    held.add((row["user_id"], row["item_id"]))
            continue
        maps = json.loads((folder / "datamaps.json").read_text())
        for line in (folder / "sequential_data.txt").read_text().splitlines():
            user, *items = line.split()
            held.update((maps["id2user"][user], maps["id2item"][i]) for i in items[-2:])
    return held
