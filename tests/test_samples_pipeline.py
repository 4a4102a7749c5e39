"""``pipelines/samples.toml``: every real sample in ../shared/data through the whole build.

Expected values come from reading the raw files with the standard library.
"""

from __future__ import annotations

import ast
import csv
import json
import re
import zlib
from collections import Counter
from pathlib import Path

import datasets
import polars as pl
import pyarrow.parquet as pq
import pytest
from held_out import held_out_pairs


@pytest.fixture(scope="module")
def built(samples_corpus: Path) -> Path:
    return samples_corpus


def per_source(out: Path) -> dict[str, dict]:
    stats = json.loads((out / "stats.json").read_text())["stages"]
    return {row["dataset"]: row for row in stats["report"]["info"]["corpus"]["per_source"]}


def test_movielens_users_and_ratings_all_reach_the_corpus(built: Path, shared: Path) -> None:
    """Every MovieLens user has 20+ ratings of titled movies and no benchmark holds them out."""
    with open(shared / "movielens" / "ml-latest-small" / "ratings.csv", newline="") as f:
        small = [(r["userId"], r["movieId"]) for r in csv.DictReader(f)]
    with open(shared / "movielens" / "ml-100k" / "u.data") as f:
        hundred = [tuple(line.split("\t")[:2]) for line in f if line.strip()]
    rows = per_source(built)
    for dataset, ratings in (("movielens/ml-latest-small", small), ("movielens/ml-100k", hundred)):
        assert rows[dataset]["interactions"] == len(ratings)
        assert rows[dataset]["users"] == len({u for u, _ in ratings})
        assert rows[dataset]["items"] == len({i for _, i in ratings})
    documents = pq.read_table(built / "data" / "pretrain", columns=["dataset", "user_id", "num_items"])
    items_in_documents = Counter()
    for row in documents.to_pylist():
        items_in_documents[row["dataset"]] += row["num_items"]
    pairs = [json.loads(line) for line in (built / "data" / "instruct" / "instruct.jsonl").open()]
    assert items_in_documents["movielens/ml-100k"] < len(hundred)  # the instruction pool's users are not there
    assert pairs


def test_samples_without_metadata_yield_no_users(built: Path, shared: Path) -> None:
    """Musical Instruments 2014 and All Beauty 2018 ship no metadata, Magazine 2018 titles are bare
    markup, Food.com has no recipes file, Yelp's 999 reviews name 77 sample businesses: no titled
    history of 5 reaches the corpus."""
    yelp = shared / "yelp"
    businesses = (yelp / "yelp_academic_dataset_business.json").read_text().splitlines()
    reviews = (yelp / "yelp_academic_dataset_review.json").read_text().splitlines()
    yelp_business = {json.loads(line)["business_id"] for line in businesses}
    yelp_users = Counter(r["user_id"] for r in map(json.loads, reviews) if r["business_id"] in yelp_business)
    assert max(yelp_users.values()) < 5
    assert set(per_source(built)) == {"amazon2014/Digital_Music", "movielens/ml-latest-small", "movielens/ml-100k"}


def complete_lines(path: Path) -> list[str]:
    """The complete lines of a gzip file, even one cut off mid-stream (two samples are)."""
    text = zlib.decompressobj(wbits=31).decompress(path.read_bytes()).decode("utf-8", errors="replace")
    return [line for line in text.splitlines(keepends=True) if line.endswith("\n")]


def test_every_corpus_user_has_five_interactions_left_after_the_held_out_removal(built: Path, shared: Path) -> None:
    """RecGPT's rules in their order on the three datasets that yield users: interactions with a
    titled item, one per purchase (a review repeated under product variants at one time counts
    once), less every held-out pair, then users with 5+; pre-training and the pool hold exactly them."""
    raw = shared / "amazon2014"
    titles = {}
    for line in complete_lines(raw / "meta_Digital_Music.json.gz"):
        meta = ast.literal_eval(line)
        titles[meta["asin"]] = re.sub(r"<[^>]*>?", "", meta.get("title") or "").strip()
    purchases = {}
    for line in complete_lines(raw / "reviews_Digital_Music_5.json.gz"):
        review = json.loads(line)
        if titles.get(review["asin"]):
            purchases.setdefault((review["reviewerID"], review["unixReviewTime"], review["reviewText"]), review["asin"])
    events = [("amazon2014/Digital_Music", user, item) for (user, _, _), item in purchases.items()]
    with open(shared / "movielens" / "ml-latest-small" / "ratings.csv", newline="") as f:
        events += [("movielens/ml-latest-small", r["userId"], r["movieId"]) for r in csv.DictReader(f)]
    with open(shared / "movielens" / "ml-100k" / "u.data") as f:
        events += [("movielens/ml-100k", *line.split("\t")[:2]) for line in f if line.strip()]
    held = held_out_pairs(built)
    left = Counter((dataset, user) for dataset, user, item in events if (user, item) not in held)
    expected = {key: n for key, n in left.items() if n >= 5}

    documented: Counter = Counter()
    for row in pq.read_table(built / "data" / "pretrain", columns=["dataset", "user_id", "num_items"]).to_pylist():
        documented[(row["dataset"], row["user_id"])] += row["num_items"]
    pool = pq.read_table(built / ".stages" / "split" / "interactions", columns=["dataset", "user_id", "split"])
    pooled = Counter((r["dataset"], r["user_id"]) for r in pool.to_pylist() if r["split"] == "instruct")
    assert pooled and not set(pooled) & set(documented)
    assert {**documented, **pooled} == expected
    assert min(expected.values()) >= 5


def test_p5_beauty_is_held_out_and_the_folder_loads(built: Path, shared: Path) -> None:
    lines = (shared / "p5" / "beauty" / "sequential_data.txt").read_text().splitlines()
    held_out_pairs = sum(min(2, len(line.split()) - 1) for line in lines if line.strip())
    stats = json.loads((built / "stats.json").read_text())["stages"]
    assert stats["load_p5"]["rows_out"]["held_out"] == held_out_pairs == 2 * 22_363
    assert stats["write_pretrain"]["info"]["leak_check"]["leaked"] == 0
    pretrain = datasets.load_dataset(str(built), "pretrain")
    manifest = json.loads((built / "manifest.json").read_text())
    assert {s: pretrain[s].num_rows for s in pretrain} == {
        s: v["rows"] for s, v in manifest["pretrain"]["splits"].items()
    }
    assert datasets.load_dataset(str(built), "instruct")["train"].num_rows > 0


def test_rejected_records_of_a_pipeline_run_can_be_inspected(built: Path) -> None:
    """The truncated last lines of the two cut-off Amazon 2014 gzips (7,419 and 6,908 complete
    records, PROVENANCE.md) are kept with file, line and raw text, as many as the stats count."""
    from recgpt_data.pipeline.dropped import dropped_rows

    (raw,) = [d for d in dropped_rows(built) if d.stage == "ingest"]
    rows = raw.rows.collect()
    stats = json.loads((built / "stats.json").read_text())["stages"]["ingest"]
    assert raw.by_reason() == stats["dropped"]
    truncated = rows.filter(pl.col("drop_reason") == "amazon2014:truncated_record")
    assert sorted(
        zip(
            truncated["file"].map_elements(lambda f: Path(f).name, return_dtype=pl.String),
            truncated["line"],
            strict=True,
        )
    ) == [
        ("meta_Digital_Music.json.gz", 7_420),
        ("reviews_Digital_Music_5.json.gz", 6_909),
    ]
