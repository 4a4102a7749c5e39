"""``pipelines/recgpt.toml`` end to end on a miniature raw tree of all 13 sources (tests/raw_tree.py:
real sample slices and the hand-written fixtures, laid out as the owners publish them), in two user
buckets; and the spec's options for this project's additions to the paper.

Expected values come from reading the raw tree and the written shards with the standard library and
pyarrow, and from the tokenizer called directly.
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import REPO
from raw_tree import FORMATS, build_raw_tree
from token_shards import assert_token_shards
from tokenizers import Tokenizer

from recgpt_data.paper_stats import PAPER_TOTALS
from recgpt_data.pipeline.runner import plan, run_spec
from recgpt_data.pipeline.spec import load_spec

SPEC = REPO / "pipelines" / "recgpt.toml"
TOKENIZER = REPO / "recgpt_data" / "assets" / "gpt-neox-20b" / "tokenizer.json"
# The Yelp stand-in holds MovieLens 100K ratings (1997-1998): its benchmark window is moved to them.
MINI = {
    "with_amazon2023": "true",
    "yelp_benchmark_start": "1997-01-01T00:00:00Z",
    "yelp_benchmark_end": "1999-01-01T00:00:00Z",
    "tokenizer": str(TOKENIZER),
}


@pytest.fixture(scope="module")
def built(shared: Path, fixtures: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The raw tree and the output folder of the spec run on it in two user buckets."""
    root = tmp_path_factory.mktemp("recgpt")
    raw = build_raw_tree(shared, fixtures, root / "raw")
    spec = load_spec(SPEC, {"raw": str(raw), **MINI})
    spec.partitions = 2
    run_spec(spec, root / "out")
    return raw, root / "out"


def stats(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text())["stages"]


def shard_rows(out: Path) -> list[dict]:
    return pq.read_table(out / "data" / "pretrain").to_pylist()


def test_the_spec_follows_the_paper_unless_told_otherwise() -> None:
    """By default no language filter, no near-duplicate removal, no Amazon 2023, no 2014 rows beyond
    the benchmarks and no token cap; each var switches its addition on."""
    paper = plan(load_spec(SPEC, {"raw": "/data/raw"}))
    keys = [p.key for p in paper]
    assert "langid" not in keys and "dedup" not in keys
    assert keys.index("cross_release") < keys.index("filter_users") < keys.index("split")
    by_key = {p.key: p.params for p in paper}
    assert "amazon2023" not in {s.format for s in by_key["ingest"].sources}
    assert by_key["cross_release"].keep_older == "none"
    assert by_key["write_pretrain"].target_tokens is None
    assert (by_key["filter_users"].min_interactions, by_key["split"].instruct_fraction) == (5, 0.005)
    assert by_key["pretrain_documents"].max_tokens == 2048
    extra = {"language_filter": "true", "near_dedup": "true", "with_amazon2023": "true", "amazon2014_rows": "unmatched"}
    more = {p.key: p.params for p in plan(load_spec(SPEC, {"raw": "/data/raw", **extra}))}
    assert {"langid", "dedup"} <= set(more)
    assert {s.format for s in more["ingest"].sources} == FORMATS
    assert more["cross_release"].keep_older == "unmatched"


def test_every_source_is_read(built: tuple[Path, Path]) -> None:
    """All 13 formats are ingested; BookCrossing's user table (demographics) is skipped unread."""
    raw, out = built
    ingest = stats(out)["ingest"]
    assert set(ingest["rows_in"]) == FORMATS
    skipped = [s for source in ingest["info"]["sources"] for s in source["skipped"]]
    assert str(raw / "bookcrossing" / "BX-Users.csv") in skipped
    assert {p.name for p in (out / "eval").iterdir()} == {"beauty", "sports", "toys", "yelp"}


def test_every_user_in_the_corpus_has_five_titled_items(built: tuple[Path, Path]) -> None:
    """The >= 5 rule holds in the written shards, and every item line names its title first."""
    _, out = built
    items = Counter()
    for row in shard_rows(out):
        items[row["dataset"], row["user_id"]] += row["num_items"]
        lines = row["text"].split("\n")[2:]
        assert len(lines) == row["num_items"] == len(row["item_ids"])
        assert all(line.startswith("Title: ") for line in lines)
    assert items and min(items.values()) >= 5


def test_documents_fit_the_context_and_their_counts_are_exact(built: tuple[Path, Path]) -> None:
    _, out = built
    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    rows = shard_rows(out)
    counts = [len(e.ids) for e in tokenizer.encode_batch([r["text"] for r in rows], add_special_tokens=False)]
    assert counts == [r["num_tokens"] for r in rows]
    assert max(counts) + 1 <= 2048


def test_histories_are_chronological(built: tuple[Path, Path]) -> None:
    """MovieLens users (no benchmark holds them out, every movie has a title): a user's documents in
    chunk order hold their ratings sorted by time, ties in file order."""
    raw, out = built
    with open(raw / "movielens" / "ml-25m" / "ratings.csv", newline="") as handle:
        ratings = list(csv.DictReader(handle))
    expected = defaultdict(list)
    for _, row in sorted(enumerate(ratings), key=lambda pair: (int(pair[1]["timestamp"]), pair[0])):
        expected[row["userId"]].append(row["movieId"])
    found = defaultdict(list)
    for row in sorted(shard_rows(out), key=lambda r: r["chunk_index"]):
        if row["dataset"] == "movielens/ml-25m":
            found[row["user_id"]].extend(row["item_ids"])
    assert found and all(found[user] == expected[user] for user in found)


def test_no_benchmark_interaction_is_in_the_corpus(built: tuple[Path, Path]) -> None:
    """Each benchmark user's last two items (P5's validation and test) are in no document."""
    _, out = built
    held = []
    for folder in (out / "eval").iterdir():
        maps = json.loads((folder / "datamaps.json").read_text())
        for line in (folder / "sequential_data.txt").read_text().splitlines():
            user, *items = line.split()
            held.extend((maps["id2user"][user], maps["id2item"][i]) for i in items[-2:])
    assert len(held) == sum(json.loads((f / "summary.json").read_text())["users"] * 2 for f in (out / "eval").iterdir())
    pairs = {(r["user_id"], item) for r in shard_rows(out) for item in r["item_ids"]}
    assert not pairs & set(held)


def test_2014_rows_serve_only_the_benchmarks(built: tuple[Path, Path]) -> None:
    """With the paper's default, every 2014 row left after cleaning (the Toys stand-in's reviews of
    titled items) is dropped as an older-release row, and no 2014 user is in the corpus."""
    raw, out = built
    titled = set()
    with gzip.open(raw / "amazon2014" / "meta_Toys_and_Games.json.gz", "rt") as lines:
        for line in lines:
            meta = ast.literal_eval(line)
            if meta.get("title", "").strip():
                titled.add(meta["asin"])
    with gzip.open(raw / "amazon2014" / "reviews_Toys_and_Games_5.json.gz", "rt") as lines:
        toys = [json.loads(line) for line in lines]
    assert stats(out)["cross_release"]["dropped"] == {"older_release_not_kept": sum(r["asin"] in titled for r in toys)}
    assert not [r for r in shard_rows(out) if r["source"] == "amazon2014"]


def test_the_report_table_matches_the_shards(built: tuple[Path, Path]) -> None:
    """Users, items, interactions and tokens per source, their totals and the ratios to the paper's
    totals, in stats.json and the report page, against a plain reading of the shards."""
    _, out = built
    users, items, interactions, tokens = defaultdict(set), defaultdict(set), Counter(), Counter()
    for row in shard_rows(out):
        source = row["source"]
        users[source].add((row["dataset"], row["user_id"]))
        items[source].update((row["dataset"], item) for item in row["item_ids"])
        interactions[source] += len(row["item_ids"])
        tokens[source] += row["num_tokens"]
    expected = [
        {
            "source": s,
            "users": len(users[s]),
            "items": len(items[s]),
            "interactions": interactions[s],
            "tokens": tokens[s],
        }
        for s in sorted(users)
    ]
    paper = stats(out)["report"]["info"]["corpus"]["paper"]
    assert paper["per_source"] == expected
    totals = {c: sum(row[c] for row in expected) for c in PAPER_TOTALS}
    assert paper["totals"] == totals
    assert paper["ratio_to_paper"] == {c: totals[c] / PAPER_TOTALS[c] for c in PAPER_TOTALS}
    page = (out / "report" / "index.md").read_text()
    assert (
        f"| **total** | {totals['users']:,} | {totals['items']:,} | {totals['interactions']:,} | {totals['tokens']:,} |"
        in page
    )
    assert "| paper | 10,160,000 | 10,310,000 | 258,100,000 | 20,500,000,000 |" in page


def test_token_shards_hold_every_document_then_eos(built: tuple[Path, Path]) -> None:
    """exports/tokens/<shard>.bin is each document of the parquet shard, in order, as the tokenizer
    encodes it, then EOS (id 0); <shard>.idx holds where each document ends (tests/token_shards.py)."""
    _, out = built
    assert_token_shards(out, TOKENIZER)
