"""``recgpt-data run --sample FRACTION``: the demo built on the users a plain-Python FNV-1a + fmix64 reading of
the bundled files selects, the same users in every later stage, and the fraction in the fingerprints."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import polars as pl
import pytest
from conftest import build
from hash_oracle import draw

from recgpt_data.pipeline.runner import spec_status
from recgpt_data.pipeline.spec import load_spec
from recgpt_data.sampling import with_sample

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "recgpt_data" / "demo"
SEED = 1234  # pipelines/demo.toml
FRACTION = 0.6  # the demo has 10 MovieLens users: 6 drawn keep a 3-core for its benchmark, 5 do not


def in_sample(user: str) -> bool:
    """The documented rule: FNV-1a 64 of ``<seed>\\x1fsample\\x1f<user>`` finished by fmix64, top
    53 bits as [0, 1)."""
    return draw(f"sample\x1f{user}", SEED) < FRACTION


def demo_interactions() -> list[tuple[str, str]]:
    """(dataset, user) of every interaction in the bundled files, read with the standard library."""
    rows = []
    for dataset, path in (
        ("amazon2018/Magazine_Subscriptions", DEMO / "amazon2018" / "Magazine_Subscriptions_5.json.gz"),
        ("amazon2014/Digital_Music", DEMO / "amazon2014" / "reviews_Digital_Music_5.json.gz"),
    ):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows += [(dataset, json.loads(line)["reviewerID"]) for line in f if line.strip()]
    with open(DEMO / "movielens" / "ml-latest-small" / "ratings.csv", newline="") as f:
        rows += [("movielens/ml-latest-small", r["userId"]) for r in csv.DictReader(f)]
    return rows


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sampled") / "out"
    done = build("demo.toml", out, "--sample", str(FRACTION))
    assert done.returncode == 0, done.stderr
    return out


def users(frame: pl.LazyFrame) -> set[tuple[str, str]]:
    return set(frame.select("dataset", "user_id").unique().collect().iter_rows())


def test_ingest_keeps_exactly_the_predicted_users(sampled: Path) -> None:
    rows = demo_interactions()
    expected = {key for key in rows if in_sample(key[1])}
    assert 0 < len(expected) < len(set(rows))
    stage = sampled / ".stages" / "ingest"
    assert users(pl.scan_parquet(stage / "interactions" / "*.parquet")) == expected
    left_out = pl.read_parquet(stage / "dropped_interactions" / "*.parquet")
    assert left_out.height == sum(not in_sample(user) for _, user in rows)
    assert set(left_out["drop_reason"]) == {"user_not_sampled"}
    stats = json.loads((sampled / "stats.json").read_text())["stages"]["ingest"]
    assert stats["dropped"]["user_not_sampled"] == left_out.height


def test_every_later_stage_sees_only_sampled_users(sampled: Path) -> None:
    expected = {key for key in demo_interactions() if in_sample(key[1])}
    for stage in ("clean", "filter_users", "split"):
        found = users(pl.scan_parquet(sampled / ".stages" / stage / "interactions" / "*.parquet"))
        assert found and found <= expected, stage
    shards = pl.scan_parquet(sampled / "data" / "pretrain" / "*.parquet")
    assert users(shards) <= expected


def test_the_fraction_is_part_of_the_fingerprints(sampled: Path) -> None:
    spec = load_spec(REPO / "pipelines" / "demo.toml")
    assert {s.state for s in spec_status(with_sample(spec, FRACTION), sampled)} == {"done"}
    states = {s.key: s.state for s in spec_status(with_sample(spec, 0.7), sampled)}
    assert set(states.values()) == {"stale"}
