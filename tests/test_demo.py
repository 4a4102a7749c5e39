"""The README's main job: ``recgpt-data run pipelines/demo.toml`` on the bundled demo data.

Expected counts come from reading the bundled files with the standard library (``json``, ``csv``,
``ast.literal_eval`` for the Amazon 2014 metadata), never from the library; the held-out pairs are
read from the benchmarks' published ``eval/<name>/interactions.parquet``.
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import datasets
import polars as pl
import pyarrow.parquet as pq
import pytest
from conftest import CLI, build, folder_digests
from held_out import held_out_pairs

from recgpt_data.pipeline.dropped import dropped_rows

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "recgpt_data" / "demo"
HEADER = re.compile(r"^Given the interaction history of a user with (products|movies/shows) as follows:\n\n")


def lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line for line in f if line.strip()]


def has_text(title: str | None) -> bool:
    """A title with some text outside HTML tags (Amazon 2018 Magazine titles are bare markup)."""
    return bool(title) and bool(re.sub(r"<[^>]*>?", "", title).strip())


@pytest.fixture(scope="module")
def raw() -> dict:
    """What the bundled files hold: counts, and every interaction with a titled item."""
    m18 = [json.loads(x) for x in lines(DEMO / "amazon2018" / "Magazine_Subscriptions_5.json.gz")]
    meta18 = [json.loads(x) for x in lines(DEMO / "amazon2018" / "meta_Magazine_Subscriptions.json.gz")]
    m14 = [json.loads(x) for x in lines(DEMO / "amazon2014" / "reviews_Digital_Music_5.json.gz")]
    meta14 = [ast.literal_eval(x) for x in lines(DEMO / "amazon2014" / "meta_Digital_Music.json.gz")]
    with open(DEMO / "movielens" / "ml-latest-small" / "ratings.csv", newline="") as f:
        ratings = list(csv.DictReader(f))
    with open(DEMO / "movielens" / "ml-latest-small" / "movies.csv", newline="") as f:
        movies = list(csv.DictReader(f))
    titled18 = {m["asin"] for m in meta18 if has_text(m.get("title"))}
    titled14 = {m["asin"] for m in meta14 if has_text(m.get("title"))}
    titled_ml = {m["movieId"] for m in movies if m["title"].strip()}
    sources = (
        ("amazon2018/Magazine_Subscriptions", m18, "reviewerID", "asin", titled18),
        ("amazon2014/Digital_Music", m14, "reviewerID", "asin", titled14),
        ("movielens/ml-latest-small", ratings, "userId", "movieId", titled_ml),
    )
    with_title: list[tuple[str, str, str]] = []  # (dataset, user, item) of each titled interaction
    untitled: Counter = Counter()  # interactions whose item has no title, per (dataset, user, item)
    for dataset, rows, user, item, titled in sources:
        for r in rows:
            if r[item] in titled:
                with_title.append((dataset, r[user], r[item]))
            else:
                untitled[(dataset, r[user], r[item])] += 1
    return {
        "interactions": len(m18) + len(m14) + len(ratings),
        "items": len(meta18) + len(meta14) + len(movies),
        "with_title": with_title,
        "untitled_interactions": untitled,
    }


@pytest.fixture(scope="module")
def kept(built: Path, raw: dict) -> dict[tuple[str, str], int]:
    """RecGPT's rules in their order: titled interactions, less every held-out (user, item) pair of
    any benchmark, then users with 5+ of what is left; interactions per kept (dataset, user)."""
    held = held_out_pairs(built)
    per_user = Counter((dataset, user) for dataset, user, item in raw["with_title"] if (user, item) not in held)
    return {key: n for key, n in per_user.items() if n >= 5}


@pytest.fixture(scope="module")
def built(demo_corpus: Path) -> Path:
    return demo_corpus


def test_every_input_row_is_accounted_for(built: Path, raw: dict) -> None:
    stages = json.loads((built / "stats.json").read_text())["stages"]
    assert stages["ingest"]["rows_out"] == {"interactions": raw["interactions"], "items": raw["items"]}
    interactions = raw["interactions"]
    for name in ("clean", "langid", "dedup", "hold_out", "filter_users", "split"):
        stats = stages[name]
        assert stats["rows_in"]["interactions"] == interactions
        assert stats["rows_out"]["interactions"] == interactions - sum(stats["dropped"].values())
        interactions = stats["rows_out"]["interactions"]


def test_documents_and_pool_hold_exactly_the_users_recgpt_keeps(built: Path, kept: dict) -> None:
    """Every pre-training and instruction-pool user has exactly the interactions RecGPT's rules
    leave, 5 or more, after every filter and the held-out removal."""
    documents = pq.read_table(built / "data" / "pretrain").to_pylist()
    documented: Counter = Counter()
    for doc in documents:
        documented[(doc["dataset"], doc["user_id"])] += doc["num_items"]
    pool = pq.read_table(built / ".stages" / "split" / "interactions").to_pylist()
    pooled = Counter((row["dataset"], row["user_id"]) for row in pool if row["split"] == "instruct")
    assert pooled and not set(pooled) & set(documented)
    assert {**documented, **pooled} == kept
    assert min(kept.values()) >= 5
    # Every Magazine 2018 title in the release is bare markup: RecGPT's title rule drops them all.
    assert not any(dataset.startswith("amazon2018") for dataset, _ in kept)
    for doc in documents:
        assert HEADER.match(doc["text"]), doc["text"][:120]
        assert doc["num_tokens"] < 2048
        assert doc["text"].count("\n") - 1 == doc["num_items"]


def test_every_config_loads_with_datasets(built: Path) -> None:
    manifest = json.loads((built / "manifest.json").read_text())
    pretrain = datasets.load_dataset(str(built), "pretrain")
    for split, info in manifest["pretrain"]["splits"].items():
        assert pretrain[split].num_rows == info["rows"] > 0
    instruct = datasets.load_dataset(str(built), "instruct")["train"]
    jsonl = (built / "data" / "instruct" / "instruct.jsonl").read_text().splitlines()
    assert instruct.num_rows == len(jsonl) > 0
    for row in instruct:
        assert row["prompt"].startswith("### Instruction:\n") and row["prompt"].endswith("\n\n### Response:")
        assert not row["response"].startswith("\n")
    for name in ("music", "movies"):
        folder = built / "eval" / name
        assert (folder / "sequential_data.txt").stat().st_size > 0
        assert json.loads((folder / "datamaps.json").read_text())["user2id"]


def test_rerun_skips_every_stage_and_changes_no_byte(built: Path) -> None:
    """(``--force`` rerunning every stage to the same bytes is test_workers.py's two-worker build.)"""
    before = folder_digests(built)
    again = build("demo.toml", built)
    assert again.returncode == 0, again.stderr
    assert "ran " not in again.stdout + again.stderr
    assert folder_digests(built) == before


def test_every_dropped_row_can_be_inspected(built: Path, raw: dict, kept: dict, tmp_path: Path) -> None:
    """The rows each stage dropped are kept with their reason, as many as its stats count; the
    interactions of untitled items are exactly those the plain reading finds."""
    stages = json.loads((built / "stats.json").read_text())["stages"]
    kept = {(d.stage, d.table): d for d in dropped_rows(built)}
    for stage in ("clean_items", "clean", "langid", "dedup", "hold_out", "filter_users", "split"):
        counted = {reason: n for reason, n in stages[stage]["dropped"].items() if n}
        found: dict[str, int] = {}
        for (name, _), item in kept.items():
            if name == stage:
                found.update(item.by_reason())
        assert found == counted, stage
    untitled = kept[("clean", "interactions")].rows.collect()
    assert Counter(untitled.select("dataset", "user_id", "item_id").iter_rows()) == raw["untitled_interactions"]
    short = kept[("filter_users", "interactions")].rows.collect()
    assert not {(d, u) for d, u in short.select("dataset", "user_id").iter_rows()} & set(kept)
    export = tmp_path / "dropped.parquet"
    command = [str(CLI), "dropped", str(built), "--reason", "held_out", "--export", str(export)]
    assert subprocess.run(command, capture_output=True, text=True).returncode == 0
    assert pl.read_parquet(export).height == stages["hold_out"]["dropped"]["held_out"]
