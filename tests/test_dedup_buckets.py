"""The dedup stage in user buckets (a prepare step of tasks, then each bucket) gives exactly what
the single-process dedup gives (tests/oracle_dedup.py): every table as sorted rows, the drop and
change counts and every counter, for any bucket count, keep rule and scope, in worker processes."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from dedup_buckets import assert_same, oracle, run_buckets

from recgpt_data.dedup.scopes import DedupParams
from recgpt_data.engines.local import LocalEngine
from recgpt_data.errors import UsageError
from recgpt_data.hashing import bucket
from recgpt_data.ingest import ingest


@pytest.fixture(scope="module")
def fed_by_samples(samples_corpus: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """What pipelines/samples.toml feeds its dedup stage: langid's interactions, clean_items' items."""
    stages = samples_corpus / ".stages"
    return (
        pl.read_parquet(stages / "langid" / "interactions" / "*.parquet"),
        pl.read_parquet(stages / "clean_items" / "items" / "*.parquet"),
    )


@pytest.fixture(scope="module")
def amazon2018(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The real Amazon 2018 samples (two 5-cores, one with metadata), rich in duplicates: copied
    reviews, duplicate users and near-identical magazine items."""
    out = tmp_path_factory.mktemp("amazon2018")
    ingest("amazon2018", [shared / "amazon2018"], out)
    return pl.read_parquet(out / "interactions" / "**" / "*.parquet"), pl.read_parquet(
        out / "items" / "**" / "*.parquet"
    )


@pytest.mark.parametrize(
    ("partitions", "params"),
    [
        (1, {"keep": "earliest"}),
        (3, {"keep": "most_helpful", "items": "remap"}),
        (7, {"keep": "longest", "items": "remap", "text_action": "drop"}),
    ],
)
def test_the_samples_pipeline_input_deduplicates_as_in_one_process(
    fed_by_samples, partitions, params, tmp_path
) -> None:
    interactions, items = fed_by_samples
    chosen = DedupParams(**params)
    expected = oracle(interactions, items, chosen)
    assert expected.stats.info["items_in_duplicate_clusters"] == 2559
    assert_same(run_buckets(interactions, items, chosen, partitions, tmp_path), expected)


@pytest.mark.parametrize("keep", ["earliest", "most_helpful", "longest"])
@pytest.mark.parametrize("items", ["mark", "remap"])
def test_duplicate_rich_reviews_deduplicate_as_in_one_process(amazon2018, keep, items, tmp_path) -> None:
    interactions, item_table = amazon2018
    params = DedupParams(keep=keep, items=items)
    expected = oracle(interactions, item_table, params)
    # duplicate users are found (how many depends on which LSH candidates the MinHash values make)
    assert expected.stats.info["duplicate_users"] > 0 and expected.stats.info["verified_edges"] == 13
    for partitions in (1, 3, 7):
        assert_same(run_buckets(interactions, item_table, params, partitions, tmp_path / str(partitions)), expected)


def test_the_prepare_tasks_run_in_worker_processes_alike(amazon2018, tmp_path) -> None:
    interactions, item_table = amazon2018
    params = DedupParams(items="remap", variant_title_similarity=0.8)
    engine = LocalEngine(workers=2)
    try:
        found = run_buckets(interactions, item_table, params, 3, tmp_path, engine.map)
    finally:
        engine.close()
    assert_same(found, oracle(interactions, item_table, params))


def steam_review(item: str, text: str) -> dict:
    return {
        "funny": "",
        "posted": "Posted March 3, 2014.",
        "last_edited": "",
        "item_id": item,
        "helpful": "No ratings yet",
        "recommend": True,
        "review": text,
    }


@pytest.mark.parametrize("keep", ["earliest", "longest"])
def test_one_users_reviews_of_one_line_and_day_order_as_in_one_process(keep, tmp_path) -> None:
    """Steam's user-review file holds each user's reviews on one line: reviews posted on one day tie
    on (timestamp, file, line), and the input order breaks the tie, in buckets as in one process."""
    copied = "Great co-op game, hours of fun with friends and a fair price for what you get."
    users = {
        "76561197970982479": [
            steam_review("10", copied),
            steam_review("20", "Too short for the price."),
            steam_review("30", copied),
        ],
        "js41637": [steam_review("40", copied), steam_review("50", "Runs well on an old laptop, recommended.")],
    }
    raw = tmp_path / "steam" / "australian_user_reviews.json"
    raw.parent.mkdir()
    raw.write_text(
        "".join(
            repr({"user_id": u, "user_url": f"http://steamcommunity.com/id/{u}", "reviews": r}) + "\n"
            for u, r in users.items()
        ),
        encoding="utf-8",
    )
    ingest("steam", [raw.parent], tmp_path / "canonical")
    interactions = pl.read_parquet(tmp_path / "canonical" / "interactions" / "**" / "*.parquet")
    tied = interactions.filter(pl.struct("timestamp", "src_file", "src_line").is_duplicated())
    assert tied.height == 5  # every review of a line ties with the others of its line
    items = pl.DataFrame(
        schema={
            "dataset": pl.String,
            "item_id": pl.String,
            "title": pl.String,
            "brand": pl.String,
            "description": pl.String,
        }
    )
    params = DedupParams(keep=keep)
    expected = oracle(interactions, items, params)
    assert expected.stats.changed == {"review_text_duplicate": 2}
    for partitions in (1, 3, 7):
        assert_same(run_buckets(interactions, items, params, partitions, tmp_path / str(partitions)), expected)


def test_two_users_tied_on_one_line_are_refused(tmp_path) -> None:
    """Two users' rows with equal (dataset, timestamp, src_file, src_line) in two buckets have no
    defined order: one error line, whatever the bucket count that separates them."""
    users = {"alice": [steam_review("10", "Fun for an hour.")], "bob": [steam_review("20", "Crashes at start.")]}
    raw = tmp_path / "steam" / "australian_user_reviews.json"
    raw.parent.mkdir()
    raw.write_text("".join(repr({"user_id": u, "reviews": r}) + "\n" for u, r in users.items()), encoding="utf-8")
    ingest("steam", [raw.parent], tmp_path / "canonical")
    interactions = pl.read_parquet(tmp_path / "canonical" / "interactions" / "**" / "*.parquet")
    assert interactions.height == 2
    tied = interactions.with_columns(pl.lit(1, interactions["src_line"].dtype).alias("src_line"))
    items = pl.DataFrame(schema={c: pl.String for c in ("dataset", "item_id", "title", "brand", "description")})
    parts = [p for p in range(2, 9) if bucket(tied["user_id"], p).n_unique() == 2][:1]
    assert parts  # some bucket count puts the two users apart
    with pytest.raises(UsageError, match="chronological order is not defined"):
        run_buckets(tied, items, DedupParams(), parts[0], tmp_path / "b")
    assert_same(
        run_buckets(interactions, items, DedupParams(), parts[0], tmp_path / "ok"),
        oracle(interactions, items, DedupParams()),
    )
