"""The bucket cut on real reviews: every row lands in its user's bucket, in the table's order, and a
task whose buffered rows pass the byte bound writes them out early without changing a bucket's rows."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recgpt_data.pipeline import shuffle

BUCKETS = 7


def bucket_by_reading(user: str) -> int:
    """Bucket of a user id read independently of the library: FNV-1a 64 of its UTF-8 bytes mod the count."""
    h = 0xCBF29CE484222325
    for byte in user.encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h % BUCKETS


@pytest.fixture
def reviews(shared: Path, tmp_path: Path) -> tuple[Path, list[dict]]:
    """All Beauty 2018's real reviews (user, item, time, text) in a parquet file of small row groups."""
    rows = []
    with open(shared / "amazon2018" / "All_Beauty_5.json", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            rows.append(
                {
                    "user_id": r["reviewerID"],
                    "item_id": r["asin"],
                    "timestamp": r["unixReviewTime"],
                    "review_text": r.get("reviewText"),
                }
            )
    path = tmp_path / "reviews.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=500)
    return path, rows


def cut(path: Path, target: Path) -> dict[int, list[dict]]:
    tasks = shuffle.cut_tasks([path], "user_id", BUCKETS, target)
    for task in tasks:
        shuffle.cut_piece(task)
    out: dict[int, list[dict]] = {}
    for index in range(BUCKETS):
        for task in tasks:
            piece = target / shuffle.piece_name(index, task.piece)
            if piece.exists():
                out.setdefault(index, []).extend(pq.read_table(piece).to_pylist())
    return out


def test_each_bucket_holds_its_users_rows_in_table_order(reviews, tmp_path, monkeypatch):
    path, rows = reviews
    expected: dict[int, list[dict]] = {}
    for r in rows:
        expected.setdefault(bucket_by_reading(r["user_id"]), []).append(r)
    assert cut(path, tmp_path / "unbounded") == expected

    # Batches of 256 rows and a byte bound far below the task's rows: buckets are written in
    # several row groups, with the same rows in the same order.
    monkeypatch.setattr(shuffle, "BATCH_ROWS", 256)
    monkeypatch.setattr(shuffle, "BUFFERED_BYTES", 64 << 10)
    assert cut(path, tmp_path / "bounded") == expected
    groups = [pq.ParquetFile(p).num_row_groups for p in (tmp_path / "bounded").glob("*.parquet")]
    assert max(groups) > 1
