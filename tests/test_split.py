"""The benchmark leakage guard and the user split, on the real P5 Beauty split and Amazon 2018."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from hash_oracle import draw

from recgpt_data.errors import UsageError
from recgpt_data.ingest import ingest
from recgpt_data.p5.splits import held_out_rows, load_p5, p5_events
from recgpt_data.split import INSTRUCT, PRETRAIN, assign_split, leaked
from recgpt_data.stage import Context
from recgpt_data.stages.filter_users import FilterUsersParams, filter_users_stage
from recgpt_data.stages.hold_out import HoldOutParams, hold_out_stage
from recgpt_data.stages.split import SplitParams, split_stage


def p5_pairs_by_hand(shared: Path) -> set[tuple[str, str]]:
    """The last two (user, item) pairs of every raw-id OpenP5 Beauty sequence, read plainly."""
    pairs = set()
    for line in (shared / "openp5" / "Beauty" / "user_sequence.txt").read_text().splitlines():
        user, *items = line.split()
        pairs |= {(user, items[-2]), (user, items[-1])}
    return pairs


@pytest.fixture(scope="module")
def beauty_held_out(shared) -> pl.DataFrame:
    return held_out_rows(p5_events(load_p5(shared / "p5" / "beauty")), "p5_beauty", "amazon2014/Beauty")


def test_p5_held_out_is_last_two_items_of_each_user(shared, beauty_held_out):
    assert beauty_held_out.height == 2 * 22363
    assert beauty_held_out["split"].value_counts().sort("split").rows() == [
        ("test", 22363),
        ("validation", 22363),
    ]
    maps = json.loads((shared / "p5" / "beauty" / "datamaps.json").read_text())
    first = (shared / "p5" / "beauty" / "sequential_data.txt").open().readline().split()
    user = maps["id2user"][first[0]]
    rows = beauty_held_out.filter(pl.col("user_id") == user).select("item_id", "split").rows()
    assert rows == [(maps["id2item"][first[-2]], "validation"), (maps["id2item"][first[-1]], "test")]


def test_datamaps_pairs_are_the_raw_id_sequences_last_two(shared, beauty_held_out):
    assert set(beauty_held_out.select("user_id", "item_id").iter_rows()) == p5_pairs_by_hand(shared)


@pytest.fixture(scope="module")
def beauty_2018(shared, tmp_path_factory) -> pl.DataFrame:
    out = tmp_path_factory.mktemp("beauty2018")
    ingest("amazon2018", [shared / "amazon2018" / "All_Beauty_5.json"], out)
    return pl.read_parquet(out / "interactions" / "**" / "*.parquet")


def test_hold_out_drops_2014_benchmark_pairs_from_the_2018_release(shared, beauty_held_out, beauty_2018, tmp_path):
    held = p5_pairs_by_hand(shared)
    raw = [json.loads(line) for line in (shared / "amazon2018" / "All_Beauty_5.json").open()]
    expected_dropped = sum((r["reviewerID"], r["asin"]) in held for r in raw)
    assert expected_dropped == 3
    output = hold_out_stage(
        {"interactions": beauty_2018.lazy(), "held_out": beauty_held_out.lazy()},
        HoldOutParams(),
        Context(seed=1, out_dir=tmp_path),
    )
    kept = output.tables["interactions"]
    assert output.stats.dropped == {"held_out": 3}
    assert output.drops.tables()["interactions"].height == 3
    assert kept.height == len(raw) - 3
    assert leaked(kept.lazy(), beauty_held_out.lazy()).is_empty()
    assert not any((u, i) in held for u, i in kept.select("user_id", "item_id").iter_rows())


def test_users_left_short_by_the_held_out_removal_are_dropped_after_it(shared, beauty_held_out, beauty_2018):
    """hold_out, then filter_users: every user left has 5+ of the interactions the benchmark left."""
    held = p5_pairs_by_hand(shared)
    raw = [json.loads(line) for line in (shared / "amazon2018" / "All_Beauty_5.json").open()]
    left = Counter(r["reviewerID"] for r in raw if (r["reviewerID"], r["asin"]) not in held)
    short = {user for user, n in left.items() if n < 5}
    assert short  # the 5-core file's users whose held-out reviews leave them below 5
    tables = {"interactions": beauty_2018.lazy(), "held_out": beauty_held_out.lazy()}
    kept = hold_out_stage(tables, HoldOutParams(), Context()).tables["interactions"]
    filtered = filter_users_stage({"interactions": kept.lazy()}, FilterUsersParams(), Context()).tables["interactions"]
    assert Counter(filtered["user_id"].to_list()) == {u: n for u, n in left.items() if u not in short}


def test_split_refuses_input_that_still_holds_a_held_out_pair(shared, beauty_held_out, beauty_2018):
    held = p5_pairs_by_hand(shared)
    raw = [json.loads(line) for line in (shared / "amazon2018" / "All_Beauty_5.json").open()]
    pairs = {(r["reviewerID"], r["asin"]) for r in raw} & held
    assert len(pairs) == 2  # the 3 held-out reviews name 2 pairs
    tables = {"interactions": beauty_2018.lazy(), "held_out": beauty_held_out.lazy()}
    with pytest.raises(UsageError, match="2 held-out .* run `hold_out` before"):
        split_stage(tables, SplitParams(), Context())


def test_leak_check_finds_a_planted_pair(beauty_held_out):
    user, item = beauty_held_out.row(0)[2:4]
    planted = pl.DataFrame({"user_id": [user, "someone"], "item_ids": [["x", item], [item]]})
    assert leaked(planted.lazy(), beauty_held_out.lazy()).rows() == [(user, item)]


def test_user_split_matches_a_hand_written_hash(beauty_2018):
    seed, fraction = 42, 0.25
    out = assign_split(beauty_2018, fraction, seed)
    users = out.select("user_id", "split").unique()
    assert users["user_id"].n_unique() == users.height  # no user in both
    for user, split in users.iter_rows():
        assert split == (INSTRUCT if draw(user, seed) < fraction else PRETRAIN)
    assert out.height == beauty_2018.height
    assert (
        out.select("user_id", "item_id", "src_line").rows()
        == beauty_2018.select("user_id", "item_id", "src_line").rows()
    )


def test_same_user_goes_the_same_way_in_every_dataset():
    frame = pl.DataFrame(
        {
            "dataset": ["a", "b", "a", "b"],
            "user_id": ["u1", "u1", "u2", "u2"],
            "item_id": ["i", "i", "j", "j"],
        }
    )
    out = assign_split(frame, 0.5, 3)
    assert out.group_by("user_id").agg(pl.col("split").n_unique())["split"].to_list() == [1, 1]
