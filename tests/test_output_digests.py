"""The demo and samples builds say exactly what the reference commit's builds said (see
tests/output_digests.py): the guard that a refactor changes no output. A commit that changes the
corpus on purpose regenerates the reference with ``python tests/output_digests.py --write``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from output_digests import REFERENCE, content_digests


def _differences(expected: dict[str, str], found: dict[str, str]) -> list[str]:
    names = sorted(set(expected) | set(found))
    return [name for name in names if expected.get(name) != found.get(name)]


@pytest.mark.parametrize("build", ["demo", "samples"])
def test_build_matches_the_reference(build: str, request: pytest.FixtureRequest) -> None:
    out: Path = request.getfixturevalue(f"{build}_corpus")
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    assert _differences(reference[build], content_digests(out)) == [], (
        f"{build} differs from the build of {reference['built_at']}"
    )


def test_digests_follow_rows_not_parquet_bytes(demo_corpus: Path, tmp_path: Path) -> None:
    """The same rows written with other row groups digest the same; one changed value does not."""
    copy = tmp_path / "copy"
    shutil.copytree(demo_corpus, copy, ignore=shutil.ignore_patterns(".stages"))
    shard = copy / "data" / "pretrain" / "train-00000-of-00001.parquet"
    table = pq.read_table(shard)
    pq.write_table(table, shard, row_group_size=7, compression="gzip")
    assert content_digests(copy) == content_digests(demo_corpus)
    texts = table.column("text").to_pylist()
    texts[0] = texts[0] + " "
    pq.write_table(table.set_column(table.schema.get_field_index("text"), "text", [texts]), shard)
    assert _differences(content_digests(demo_corpus), content_digests(copy)) == [
        "data/pretrain/train-00000-of-00001.parquet"
    ]
