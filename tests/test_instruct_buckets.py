"""The ``instruct_pairs`` stage spread over user buckets and worker processes writes the pairs one
process drawing from every user wrote (the stage's former single-task code, kept as the oracle in
``instruct_oracle.py``), byte for byte, and counts the same drops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from instruct_oracle import one_process_pairs

from recgpt_data.engines.local import LocalEngine
from recgpt_data.instruct.pairs import InstructPairsParams
from recgpt_data.io.parquet import write_parquet
from recgpt_data.pipeline.runner import run_spec
from recgpt_data.pipeline.spec import load_spec
from recgpt_data.stages.write_instruct import COLUMNS, JSONL, PARQUET, instruct_jsonl

SEED = 7
PAIRS = {"default": {"rating": 40, "next_item": 60}, "max_pairs_per_user": 3}  # fewer than the windows


def spec_text(raw: Path, partitions: int | None) -> str:
    """Magazine Subscriptions ingested, 40% of its users in the instruction pool, their pairs."""
    counts = PAIRS["default"]
    return "\n".join(
        [
            'name = "instruct-buckets"',
            f"seed = {SEED}",
            f"partitions = {partitions}" if partitions else "",
            "[[stages]]",
            'stage = "ingest"',
            f'params.sources = [{{ format = "amazon2018", paths = ["{raw}/Magazine_Subscriptions_5.json", '
            f'"{raw}/meta_Magazine_Subscriptions.json.gz"] }}]',
            "[[stages]]",
            'stage = "split"',
            "params.instruct_fraction = 0.4",
            "[[stages]]",
            'stage = "instruct_pairs"',
            f"params.default = {{ rating = {counts['rating']}, next_item = {counts['next_item']} }}",
            f"params.max_pairs_per_user = {PAIRS['max_pairs_per_user']}",
            "[[stages]]",
            'stage = "write_instruct"',
        ]
    )


def built(shared: Path, folder: Path, partitions: int | None, workers: int) -> dict:
    """One run: the final folder's instruct files, the run's tables and the stage's stats."""
    folder.mkdir(parents=True)
    (folder / "spec.toml").write_text(spec_text(shared / "amazon2018", partitions), encoding="utf-8")
    engine = LocalEngine(workers=workers, threads=1) if workers > 1 else None
    try:
        result = run_spec(load_spec(folder / "spec.toml"), folder / "out", engine=engine)
    finally:
        if engine is not None:
            engine.close()
    return {
        "files": {path: (folder / "out" / path).read_bytes() for path in (PARQUET, JSONL)},
        "tables": result.tables,
        "stats": result.stats["instruct_pairs"],
    }


@pytest.fixture(scope="module")
def runs(shared, tmp_path_factory) -> dict[tuple[int | None, int], dict]:
    root = tmp_path_factory.mktemp("instruct-buckets")
    layouts = [(None, 1), (3, 1), (4, 2)]  # whole; three buckets in this process; four in two workers
    return {(p, w): built(shared, root / f"{p}-{w}", p, w) for p, w in layouts}


def test_buckets_and_workers_write_the_one_process_pairs(runs, tmp_path) -> None:
    whole = runs[(None, 1)]
    tables = whole["tables"]
    oracle = one_process_pairs(tables["interactions"], tables["items"], None, InstructPairsParams(**PAIRS), SEED)
    pairs = oracle.instruct
    assert pairs.height == sum(PAIRS["default"].values())  # the counts, not the windows, bound the pairs
    expected_jsonl = instruct_jsonl(pairs).encode()
    write_parquet(pairs.select(COLUMNS), tmp_path / "oracle.parquet")
    expected_parquet = (tmp_path / "oracle.parquet").read_bytes()
    for layout, run in runs.items():
        assert run["files"][JSONL] == expected_jsonl, layout
        assert run["files"][PARQUET] == expected_parquet, layout
        stats = run["stats"]
        assert stats["dropped"] == dict(sorted(oracle.drops.dropped.items())), layout
        assert stats["changed"] == dict(sorted(oracle.drops.changed.items())), layout
        assert json.dumps(stats["info"]["pairs"], sort_keys=True) == json.dumps(oracle.info["pairs"], sort_keys=True)
        assert stats["rows_out"]["instruct"] == pairs.height
    for layout in ((3, 1), (4, 2)):
        stored = runs[layout]["tables"]["instruct"].collect()
        assert stored.sort("source", "dataset", "user_id", "task", maintain_order=True).equals(pairs), layout
