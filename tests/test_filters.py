"""Row filters: minimum interactions per user and dataset, the iterative k-core, untitled items."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from recgpt_data.clean.filters import drop_interactions_of_untitled, drop_untitled_items, kcore
from recgpt_data.ingest import ingest
from recgpt_data.stage import Context
from recgpt_data.stages.filter_users import FilterUsersParams, filter_users_stage
from recgpt_data.stages.kcore import KcoreParams, kcore_stage

INSTRUMENTS = "amazon2014/reviews_Musical_Instruments_5.json.gz"


def plain_kcore(pairs: list[tuple[str, str]], min_user: int, min_item: int) -> list[tuple[str, str]]:
    """The k-core by repeated counting, in plain Python."""
    while True:
        users = Counter(u for u, _ in pairs)
        items = Counter(i for _, i in pairs)
        kept = [(u, i) for u, i in pairs if users[u] >= min_user and items[i] >= min_item]
        if len(kept) == len(pairs):
            return kept
        pairs = kept


@pytest.fixture(scope="module")
def instrument_pairs(shared: Path) -> list[tuple[str, str]]:
    with gzip.open(shared / INSTRUMENTS, "rt", encoding="utf-8") as handle:
        return [(r["reviewerID"], r["asin"]) for r in map(json.loads, handle)]


@pytest.fixture(scope="module")
def instruments(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    out = tmp_path_factory.mktemp("instruments")
    ingest("amazon2014", [shared / INSTRUMENTS], out)
    return pl.read_parquet(out / "interactions" / "**" / "*.parquet")


def test_a_published_5_core_loses_nothing(instruments, instrument_pairs):
    assert len(instrument_pairs) == instruments.height == 10261
    output = filter_users_stage({"interactions": instruments.lazy()}, FilterUsersParams(), Context())
    assert output.tables["interactions"].height == 10261
    assert output.stats.dropped == {}
    core = kcore_stage({"interactions": instruments.lazy()}, KcoreParams(), Context())
    assert core.tables["interactions"].height == len(plain_kcore(instrument_pairs, 5, 5)) == 10261


def test_users_below_the_minimum_are_dropped(instruments, instrument_pairs):
    counts = Counter(u for u, _ in instrument_pairs)
    output = filter_users_stage({"interactions": instruments.lazy()}, FilterUsersParams(min_interactions=10), Context())
    dropped = sum(n for n in counts.values() if n < 10)
    assert output.stats.dropped == {"user_below_min_interactions": dropped}
    assert output.stats.info == {"users_dropped": sum(1 for n in counts.values() if n < 10)}
    assert output.tables["interactions"].height == 10261 - dropped


def test_kcore_iterates_to_a_fixed_point(instruments, instrument_pairs):
    expected = plain_kcore(instrument_pairs, 5, 6)
    result = kcore(instruments, min_user=5, min_item=6)
    assert list(result.frame.select("user_id", "item_id").iter_rows()) == expected
    assert sum(result.drops.dropped.values()) == 10261 - len(expected)
    assert result.info["rounds"] >= 2
    users = Counter(u for u, _ in expected)
    items = Counter(i for _, i in expected)
    assert len(expected) == 5908 and min(users.values()) >= 5 and min(items.values()) >= 6


def test_counts_are_per_dataset():
    frame = pl.DataFrame(
        {
            "dataset": ["a"] * 3 + ["b"] * 2,
            "user_id": ["u"] * 5,
            "item_id": ["i1", "i2", "i3", "i1", "i2"],
            "cluster_id": [1, 2, 3, 4, 5],
        }
    )
    output = filter_users_stage({"interactions": frame.lazy()}, FilterUsersParams(min_interactions=3), Context())
    kept = output.tables["interactions"]
    assert kept.columns == frame.columns
    assert kept["cluster_id"].to_list() == [1, 2, 3]
    assert output.stats.dropped == {"user_below_min_interactions": 2}


def test_untitled_items_and_their_interactions_are_dropped():
    items = pl.DataFrame(
        {
            "dataset": ["d", "d", "d", "d", "e"],
            "item_id": ["titled", "untitled", "twice", "twice", "absent"],
            "title": ["A", None, None, "B", "in another dataset"],
        }
    )
    interactions = pl.DataFrame(
        {
            "dataset": ["d"] * 5,
            "user_id": ["u"] * 5,
            "item_id": ["titled", "untitled", "twice", "absent", "titled"],
        }
    )
    kept = drop_untitled_items(items)
    assert kept.frame["item_id"].to_list() == ["titled", "twice", "absent"]
    assert dict(kept.drops.dropped) == {"item_without_title": 2}
    result = drop_interactions_of_untitled(interactions, kept.frame)
    assert result.frame["item_id"].to_list() == ["titled", "twice", "titled"]
    assert dict(result.drops.dropped) == {"interaction_item_without_title": 2}
    assert drop_interactions_of_untitled(interactions, items).frame.equals(result.frame)


def test_filters_are_deterministic(instruments):
    first = kcore(instruments, min_user=6, min_item=5)
    second = kcore(instruments, min_user=6, min_item=5)
    assert first.frame.equals(second.frame)
    assert first.drops.dropped == second.drops.dropped
