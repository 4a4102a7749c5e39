"""Per-user histories: chronological order with input-ordinal ties, item joins, templates, buckets."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime

import polars as pl
import pytest
from magazines import ingest_magazines

from recgpt_data.hashing import bucket
from recgpt_data.histories import bucket_events, history_lines, iter_bucket_events, user_buckets
from recgpt_data.schema import conform


def events_frame(rows: list[dict]) -> pl.DataFrame:
    return conform(pl.DataFrame(rows), "interactions")


def items_frame(rows: list[dict]) -> pl.DataFrame:
    return conform(pl.DataFrame(rows), "items")


def test_order_is_time_then_input_ordinal_with_timeless_events_first():
    t1, t2 = datetime(2020, 1, 1, tzinfo=UTC), datetime(2021, 1, 1, tzinfo=UTC)
    base = {"source": "amazon2018", "dataset": "amazon2018/X", "user_id": "u", "rating_max": 5.0}
    interactions = events_frame(
        [
            {**base, "item_id": "late", "timestamp": t2, "src_file": "a", "src_line": 1},
            {**base, "item_id": "tie-b", "timestamp": t1, "src_file": "a", "src_line": 9},
            {**base, "item_id": "tie-a", "timestamp": t1, "src_file": "a", "src_line": 3},
            {**base, "item_id": "no-time", "timestamp": None, "src_file": "b", "src_line": 7},
        ]
    )
    users = user_buckets(interactions, 1)
    events = bucket_events(interactions, items_frame([]), users)
    assert events.frame["item_id"].to_list() == ["no-time", "tie-a", "tie-b", "late"]
    assert events.without_item == 4


def test_items_join_keeps_first_row_of_a_duplicated_item_and_events_without_items():
    base = {
        "source": "amazon2018",
        "dataset": "amazon2018/X",
        "user_id": "u",
        "src_file": "f",
        "rating_max": 5.0,
    }
    interactions = events_frame(
        [{**base, "item_id": "i1", "src_line": 1, "rating": 4.0}, {**base, "item_id": "i2", "src_line": 2}]
    )
    items = items_frame(
        [
            {
                "source": "amazon2018",
                "dataset": "amazon2018/X",
                "item_id": "i1",
                "title": "First",
                "brand": "B",
            },
            {"source": "amazon2018", "dataset": "amazon2018/X", "item_id": "i1", "title": "Second"},
            {"source": "amazon2018", "dataset": "amazon2018/Y", "item_id": "i2", "title": "Other dataset"},
        ]
    )
    events = bucket_events(interactions, items, user_buckets(interactions, 1))
    assert events.frame.height == 2
    assert events.without_item == 1
    lines = history_lines(events.frame)
    assert lines["line"].to_list() == ["Title: First; Brand: B; Rating: 4.0/5.0", ""]
    assert lines["noun"].to_list() == ["products", "products"]


def test_books_dataset_uses_the_books_template_with_brand_as_author():
    interactions = events_frame(
        [
            {
                "source": "amazon2018",
                "dataset": "amazon2018/Books",
                "user_id": "u",
                "item_id": "b",
                "src_line": 1,
                "rating": 5.0,
                "rating_max": 5.0,
                "review_text": "Good\nbook",
            }
        ]
    )
    items = items_frame(
        [{"dataset": "amazon2018/Books", "item_id": "b", "title": "T", "brand": "Visit Amazon's X Page"}]
    )
    lines = history_lines(bucket_events(interactions, items, user_buckets(interactions, 1)).frame)
    assert lines.row(0, named=True)["noun"] == "books"
    assert lines["line"][0] == "Title: T; Author: Visit Amazon's X Page; Review: Good book; Rating: 5.0/5.0"


@pytest.fixture(scope="module")
def magazine(shared, tmp_path_factory) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    out = tmp_path_factory.mktemp("magazine")
    ingest_magazines(shared, out)
    return (
        pl.scan_parquet(out / "interactions" / "**" / "*.parquet"),
        pl.scan_parquet(out / "items" / "**" / "*.parquet"),
    )


def test_real_histories_match_a_plain_reading_of_the_file(shared, magazine):
    raw = [json.loads(line) for line in (shared / "amazon2018" / "Magazine_Subscriptions_5.json").open()]
    by_user: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for number, record in enumerate(raw, 1):
        by_user[record["reviewerID"]].append((record["unixReviewTime"], number, record["asin"]))
    expected = {user: [asin for _, _, asin in sorted(events)] for user, events in by_user.items()}
    interactions, items = magazine
    events = bucket_events(interactions, items, user_buckets(interactions, 1)).frame
    got = events.group_by("user_id", maintain_order=True).agg("item_id")
    assert got.height == len(expected) == 348
    assert dict(got.iter_rows()) == expected


def test_buckets_partition_users_by_the_stable_hash(magazine):
    interactions, items = magazine
    buckets = 4
    parts = list(iter_bucket_events(interactions, items, buckets))
    whole = bucket_events(interactions, items, user_buckets(interactions, 1)).frame
    users = [set(p.frame["user_id"].unique().to_list()) for p in parts]
    assert len(parts) == buckets
    assert sum(len(u) for u in users) == len(set().union(*users)) == whole["user_id"].n_unique()
    for index, part in enumerate(parts):
        assert (bucket(part.frame["user_id"], buckets) == index).all()
    merged = pl.concat([p.frame for p in parts]).sort(["dataset", "user_id"], maintain_order=True)
    assert merged.equals(whole)
