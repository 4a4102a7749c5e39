"""The dedup stage: exact counts on real files, and planted duplicates in real reviews and items."""

from __future__ import annotations

import collections
import gzip
import html
import json
import re
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from dedup_buckets import assert_same, oracle, run_buckets, sorted_rows
from magazines import ingest_magazines
from plain_dedup import copies_on_one_item, plain_normalize

from recgpt_data import stages as registry
from recgpt_data.clean.item_tasks import clean_items
from recgpt_data.dedup.scopes import DedupParams
from recgpt_data.ingest import ingest
from recgpt_data.schema import conform, empty
from recgpt_data.stages.clean_items import CleanItemsParams


def cleaned_items(items: pl.DataFrame) -> pl.DataFrame:
    """``items`` as the ``clean_items`` stage leaves them with its default parameters."""
    params = CleanItemsParams()
    return clean_items(items, params.columns, max_chars=params.max_chars, drop_untitled=params.drop_untitled)[0]


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


def run(interactions: pl.DataFrame, item_table: pl.DataFrame | None = None, **params):
    """The stage in three user buckets, as a run executes it (tests/dedup_buckets.py), after
    checking that in one, three and seven buckets it gives what the single-process dedup gives."""
    item_table = empty("items") if item_table is None else item_table
    chosen = DedupParams(**params)
    expected = oracle(interactions, item_table, chosen)
    found = {n: run_buckets(interactions, item_table, chosen, n) for n in (1, 3, 7)}
    for result in found.values():
        assert_same(result, expected)
    return found[3]


@pytest.fixture(scope="module")
def beauty(shared, tmp_path_factory) -> tuple[pl.DataFrame, list[dict]]:
    path = shared / "amazon2018" / "All_Beauty_5.json"
    out = tmp_path_factory.mktemp("beauty")
    ingest("amazon2018", [path], out)
    frame = pl.read_parquet(out / "interactions" / "**" / "*.parquet")
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return frame, raw


def test_dedup_is_a_registered_stage() -> None:
    definition = registry.get("dedup")
    assert definition.params is DedupParams
    assert definition.reads == ("interactions", "items")


def plain_shingles(norm: str) -> set[str]:
    words = norm.split(" ")
    return {norm} if len(words) < 5 else {" ".join(words[i : i + 5]) for i in range(len(words) - 4)}


@pytest.fixture(scope="module")
def beauty_clusters(beauty) -> list[int]:
    """Plain-Python clusters of the real texts at Jaccard >= 0.99 (equal normalised text included):
    each row's smallest clustered row, -1 for an empty text; every shingle-sharing pair is checked."""
    _, raw = beauty
    texts = [plain_normalize(r.get("reviewText") or "") for r in raw]
    first: dict[str, int] = {}
    for k, t in enumerate(texts):
        if t:
            first.setdefault(t, k)
    sets = {t: plain_shingles(t) for t in first}
    index: dict[str, list[str]] = collections.defaultdict(list)
    for t, shingle_set in sets.items():
        for s in shingle_set:
            index[s].append(t)
    parent = {t: t for t in first}

    def root(t: str) -> str:
        while parent[t] != t:
            t = parent[t]
        return t

    for t, shingle_set in sets.items():
        for other in {o for s in shingle_set for o in index[s] if first[o] > first[t]}:
            if len(shingle_set & sets[other]) / len(shingle_set | sets[other]) >= 0.99:
                a, b = root(t), root(other)
                parent[max(a, b, key=first.get)] = min(a, b, key=first.get)
    return [first[root(t)] if t else -1 for t in texts]


def test_exact_duplicates_in_a_real_file_match_a_plain_count(beauty) -> None:
    frame, raw = beauty
    texts = [plain_normalize(r.get("reviewText") or "") for r in raw]
    nonempty = [t for t in texts if t]
    out = run(frame, users=False, items="off")
    assert out.stats.info["exact_duplicate_texts"] == len(nonempty) - len(set(nonempty)) == 3925
    assert out.stats.info["empty_texts"] == len(texts) - len(nonempty) == 11


def test_variant_copies_in_a_real_file_match_a_plain_count(beauty) -> None:
    """Without item metadata only copies on one item id are variants: All Beauty's 5-core file
    repeats some reviews verbatim under the same ASIN."""
    frame, raw = beauty
    expected = copies_on_one_item(raw)
    out = run(frame, users=False, items="off", text_action="keep")
    assert nonzero(out.stats.dropped) == {"variant_duplicate": expected} and expected == 1053
    result = out.tables["interactions"]
    assert result.height == len(raw) - expected
    dropped = out.tables["dropped_interactions"]
    assert set(dropped["drop_reason"]) == {"variant_duplicate"}

    def key(row: dict) -> tuple:
        return row["user_id"], plain_normalize(row["review_text"]), row["rating"], row["timestamp"], row["item_id"]

    kept = {key(r) for r in result.iter_rows(named=True) if r["review_text"]}
    assert all(key(r) in kept for r in dropped.iter_rows(named=True))  # each has its kept copy


def test_variant_drops_on_real_magazines_are_copies_on_one_product(shared, tmp_path) -> None:
    """Magazine Subscriptions with its metadata: every variant drop, read back plainly from the JSON
    files, has a kept copy by the same user (same normalised text, rating and time) on the same ASIN
    or on an ASIN whose metadata title normalises equally; titles that are only HTML markup count
    as no title."""
    folder = shared / "amazon2018"
    ingest_magazines(shared, tmp_path)
    items = pl.read_parquet(tmp_path / "items" / "**" / "*.parquet")
    items = cleaned_items(items)
    interactions = pl.read_parquet(tmp_path / "interactions" / "**" / "*.parquet")
    out = run(interactions, items, users=False, items="off", text_action="keep")
    titles: dict[str, str] = {}
    with gzip.open(folder / "meta_Magazine_Subscriptions.json.gz", "rt", encoding="utf-8") as handle:
        for record in map(json.loads, handle):
            title = " ".join(re.sub(r"[^\w\s]|_", " ", html.unescape(record.get("title") or "").lower()).split())
            if title and "<" not in (record.get("title") or ""):
                titles.setdefault(record["asin"], title)
    raw = [
        json.loads(line) for line in (folder / "Magazine_Subscriptions_5.json").read_text(encoding="utf-8").splitlines()
    ]
    groups = collections.Counter(
        (r["reviewerID"], t, r["overall"], r["unixReviewTime"], titles.get(r["asin"], r["asin"]))
        for r in raw
        if (t := plain_normalize(r.get("reviewText") or ""))
    )
    assert out.stats.dropped["variant_duplicate"] == sum(n - 1 for n in groups.values()) == 44
    kept = {
        (
            r["user_id"],
            plain_normalize(r["review_text"]),
            r["rating"],
            r["timestamp"],
            titles.get(r["item_id"], r["item_id"]),
        )
        for r in out.tables["interactions"].iter_rows(named=True)
        if r["review_text"]
    }
    for r in out.tables["dropped_interactions"].iter_rows(named=True):
        assert (
            r["user_id"],
            plain_normalize(r["review_text"]),
            r["rating"],
            r["timestamp"],
            titles.get(r["item_id"], r["item_id"]),
        ) in kept


def test_duplicate_texts_are_blanked_and_the_interactions_kept(beauty, beauty_clusters) -> None:
    frame, raw = beauty
    clustered = [c for c in beauty_clusters if c >= 0]
    out = run(frame, threshold=0.99, users=False, items="off", variants=False)
    result = out.tables["interactions"]
    assert result.height == len(raw)
    assert nonzero(out.stats.changed) == {"review_text_duplicate": len(clustered) - len(set(clustered))}
    kept = result.filter(pl.col("review_text").is_not_null() & pl.col("cluster_id").is_not_null())
    assert kept.height == len(set(clustered)) == 1332
    sizes = collections.Counter(clustered)
    assert sorted(result["cluster_size"].drop_nulls().to_list()) == sorted(sizes[c] for c in clustered)


def _frame(rows: list[dict]) -> pl.DataFrame:
    base = datetime(2016, 1, 1, tzinfo=UTC)
    full = [
        {
            "source": "amazon2018",
            "dataset": "amazon2018/Test",
            "src_file": "f.json",
            "src_line": k + 1,
            "timestamp": base + timedelta(days=r["day"]),
            "rating": 5.0,
            "rating_max": 5.0,
            **{key: value for key, value in r.items() if key != "day"},
        }
        for k, r in enumerate(rows)
    ]
    return conform(pl.DataFrame(full), "interactions")


@pytest.fixture(scope="module")
def long_reviews(shared) -> list[str]:
    path = shared / "amazon2014" / "reviews_Musical_Instruments_5.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        texts = [json.loads(line)["reviewText"] for line in handle]
    return [t for t in texts if len(t.split()) >= 150][:20]


def _near_copy(text: str) -> str:
    words = text.split()
    words[40] = "zebra"
    return " ".join(words)


@pytest.mark.parametrize(("keep", "kept_user"), [("earliest", "A"), ("most_helpful", "B"), ("longest", "C")])
def test_keep_rule_chooses_which_copy_keeps_its_text(long_reviews, keep: str, kept_user: str) -> None:
    text = long_reviews[0]
    rows = [
        {"user_id": "A", "item_id": "i1", "day": 1, "review_text": text, "helpful_votes": 1},
        {"user_id": "B", "item_id": "i2", "day": 2, "review_text": _near_copy(text), "helpful_votes": 9},
        {
            "user_id": "C",
            "item_id": "i3",
            "day": 3,
            "review_text": text + " Really, truly great.",
            "helpful_votes": None,
        },
        {"user_id": "D", "item_id": "i4", "day": 4, "review_text": long_reviews[1], "helpful_votes": 0},
    ]
    out = run(_frame(rows), keep=keep, users=False, items="off")
    result = out.tables["interactions"].sort("src_line")
    assert result["review_text"].is_not_null().to_list() == [u in (kept_user, "D") for u in "ABCD"]
    assert result["cluster_id"].to_list() == [0, 0, 0, 3]
    assert result["cluster_size"].to_list() == [3, 3, 3, 1]
    assert nonzero(out.stats.changed) == {"review_text_duplicate": 2}


def test_short_texts_are_deduplicated_by_exact_text_and_can_be_dropped() -> None:
    rows = [
        {"user_id": "A", "item_id": "i1", "day": 1, "review_text": "Great product!"},
        {"user_id": "B", "item_id": "i2", "day": 2, "review_text": "great   PRODUCT"},
        {"user_id": "C", "item_id": "i3", "day": 3, "review_text": "Great product, love it"},
        {"user_id": "D", "item_id": "i4", "day": 4, "review_text": "\U0001f600\U0001f600"},
        {"user_id": "E", "item_id": "i5", "day": 5, "review_text": None},
        {"user_id": "F", "item_id": "i6", "day": 6, "review_text": "\U0001f600\U0001f600"},
    ]
    out = run(_frame(rows), text_action="drop", users=False, items="off")
    result = out.tables["interactions"].sort("src_line")
    assert result["user_id"].to_list() == ["A", "C", "D", "E", "F"]
    assert nonzero(out.stats.dropped) == {"duplicate_text": 1}
    assert out.stats.info["empty_texts"] == 3
    assert result["cluster_size"].to_list() == [2, 1, None, None, None]


@pytest.fixture(scope="module")
def gift_cards(fixtures, tmp_path_factory) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The hand-written variant cases (tests/fixtures/amazon2018), ingested, titles cleaned."""
    out = tmp_path_factory.mktemp("gift_cards")
    ingest("amazon2018", [fixtures / "amazon2018"], out)
    items = pl.read_parquet(out / "items" / "**" / "*.parquet")
    items = cleaned_items(items)
    return pl.read_parquet(out / "interactions" / "**" / "*.parquet"), items


def test_only_variants_of_one_product_are_merged(gift_cards) -> None:
    """Three brands' gift cards "This was a gift." on one day: kept; two designs of one brand's
    card: kept; one shirt's three sizes sharing a title: one kept, two dropped; the same short text
    on two sizes with different ratings: kept."""
    interactions, items = gift_cards
    out = run(interactions, items, users=False, items="off", text_action="keep")
    assert nonzero(out.stats.dropped) == {"variant_duplicate": 2}
    assert sorted(out.tables["dropped_interactions"]["item_id"]) == ["B07SHIRTLL", "B07SHIRTMM"]
    kept = out.tables["interactions"]
    assert kept.height == 8
    assert sorted(kept.filter(pl.col("user_id") == "A1GIFTGIVER0001")["item_id"]) == [
        "B00GIFTAMZ",
        "B00GIFTAPL",
        "B00GIFTSBX",
    ]
    assert kept.filter(pl.col("user_id") == "A2TINBUYER00002").height == 2
    assert kept.filter(pl.col("user_id") == "A4TWORATINGS004").height == 2


def test_near_equal_titles_are_variants_only_when_asked(gift_cards) -> None:
    """The two holiday tins' titles share 9 of 11 words (Jaccard 0.82): merged at 0.8, not at 0.9;
    the three brands' cards share at most 2 of their words and stay apart."""
    interactions, items = gift_cards
    loose = run(interactions, items, users=False, items="off", variant_title_similarity=0.8)
    assert sorted(loose.tables["dropped_interactions"]["item_id"]) == ["B00TINDEER", "B07SHIRTLL", "B07SHIRTMM"]
    strict = run(interactions, items, users=False, items="off", variant_title_similarity=0.9)
    assert sorted(strict.tables["dropped_interactions"]["item_id"]) == ["B07SHIRTLL", "B07SHIRTMM"]


def test_copies_on_one_item_id_are_variants_without_metadata(long_reviews) -> None:
    """Where items are ided by their parent product (Amazon 2023's ``parent_asin``) two variant
    copies share the item id, so they merge with no titles at all; a near copy is another text."""
    text = long_reviews[2]
    rows = [
        {"user_id": "A", "item_id": "parent", "day": 1, "review_text": text},
        {"user_id": "A", "item_id": "parent", "day": 1, "review_text": text},
        {"user_id": "A", "item_id": "parent", "day": 1, "review_text": _near_copy(text)},
        {"user_id": "A", "item_id": "other", "day": 1, "review_text": text},
        {"user_id": "A", "item_id": "parent", "day": 9, "review_text": text},
    ]
    out = run(_frame(rows), users=False, items="off")
    result = out.tables["interactions"].sort("src_line")
    assert result["src_line"].to_list() == [1, 3, 4, 5]
    assert nonzero(out.stats.dropped) == {"variant_duplicate": 1}
    assert result["review_text"].is_null().to_list() == [False, True, True, True]


def test_a_copied_user_history_is_dropped_whole(long_reviews) -> None:
    rows = []
    for k in range(6):
        rows.append({"user_id": "real", "item_id": f"i{k}", "day": k, "review_text": long_reviews[k]})
    for k in range(6):
        rows.append({"user_id": "bot", "item_id": f"i{k}", "day": 30 + k, "review_text": long_reviews[k]})
    for k in range(6):
        rows.append({"user_id": "fan", "item_id": f"i{k}", "day": 60 + k, "review_text": long_reviews[10 + k]})
    for k in range(3):
        rows.append({"user_id": "short", "item_id": f"i{k}", "day": 90 + k, "review_text": long_reviews[k]})
    out = run(_frame(rows), items="off")
    result = out.tables["interactions"]
    assert sorted(set(result["user_id"].to_list())) == ["fan", "real", "short"]
    assert nonzero(out.stats.dropped) == {"duplicate_user": 6}
    assert out.stats.info["duplicate_users"] == 1


@pytest.fixture(scope="module")
def magazine_items(shared) -> list[dict]:
    path = shared / "amazon2018" / "meta_Magazine_Subscriptions.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    chosen, seen = [], set()
    for r in records:
        title = r.get("title") or ""
        description = " ".join(r.get("description") or [])
        key = plain_normalize(f"{title} {r.get('brand') or ''} {description}")
        if (
            title
            and "<" not in title
            and len(description.split()) >= 25
            and key not in seen
            and title not in {c["title"] for c in chosen}
        ):
            seen.add(key)
            chosen.append({"item_id": r["asin"], "title": title, "brand": r.get("brand"), "description": description})
        if len(chosen) == 10:
            return chosen
    raise AssertionError("not enough items")


def _items(records: list[dict]) -> pl.DataFrame:
    rows = [{"source": "amazon2018", "dataset": "amazon2018/Test", **r} for r in records]
    return conform(pl.DataFrame(rows), "items")


def test_duplicate_items_are_dropped_and_their_interactions_remapped(magazine_items) -> None:
    original = magazine_items[0]
    planted = {**original, "item_id": "PLANTED", "description": original["description"] + " Subscribe today"}
    words = plain_normalize(f"{original['title']} {original['brand']} {original['description']}").split()
    assert len(words) >= 30
    items = _items(magazine_items + [planted])
    rows = [{"user_id": f"u{k}", "item_id": original["item_id"], "day": k, "review_text": None} for k in range(3)]
    rows += [{"user_id": f"v{k}", "item_id": "PLANTED", "day": k, "review_text": None} for k in range(2)]
    out = run(_frame(rows), items, items="remap")
    assert nonzero(out.stats.dropped) == {"duplicate_item": 1}
    assert nonzero(out.stats.changed) == {"item_id_remapped": 2}
    assert out.tables["items"].height == 10
    assert "PLANTED" not in out.tables["items"]["item_id"].to_list()
    assert set(out.tables["interactions"]["item_id"].to_list()) == {original["item_id"]}
    marked = run(_frame(rows), items, items="mark")
    clusters = marked.tables["items"].filter(pl.col("cluster_size") > 1)
    assert sorted(clusters["item_id"].to_list()) == sorted([original["item_id"], "PLANTED"])
    assert nonzero(marked.stats.dropped) == {}
    assert marked.stats.info["items_in_duplicate_clusters"] == 2


@pytest.fixture(scope="module")
def beauty_deduplicated(beauty):
    """The stage with its default parameters on All Beauty (checked against the single-process
    dedup in one, three and seven buckets), for the tests that compare other inputs with it."""
    return run(beauty[0])


def test_output_is_the_same_for_shuffled_input(beauty, beauty_deduplicated) -> None:
    frame, _ = beauty
    second = run(frame.sample(fraction=1.0, shuffle=True, seed=7)).tables["interactions"]
    assert beauty_deduplicated.tables["interactions"].equals(second)


def test_bad_input_is_counted_not_fatal() -> None:
    rows = [
        {"user_id": "A", "item_id": "i1", "day": 1, "review_text": "word " * 250_000},
        {"user_id": "B", "item_id": "i2", "day": 2, "review_text": ""},
        {"user_id": "C", "item_id": "i3", "day": 3, "review_text": "\ufffd\ufffd"},
        {"user_id": "D", "item_id": "i4", "day": 4, "review_text": None},
        {"user_id": "E", "item_id": "i5", "day": 5, "review_text": "\U0001f44d\U0001f44d\U0001f44d"},
    ]
    out = run(_frame(rows))
    assert out.tables["interactions"].height == 5
    assert out.stats.info["empty_texts"] == 4


@pytest.fixture(scope="module")
def beauty_renamed(beauty):
    """All Beauty's rows under another dataset name, through the stage with its defaults."""
    frame, _ = beauty
    return run(frame.with_columns(pl.lit("amazon2018/Copy").alias("dataset")))


def test_a_dataset_name_changes_no_decision(beauty_deduplicated, beauty_renamed) -> None:
    """The same real rows under two dataset names keep the same rows, drop the same rows for the
    same reasons and blank the same texts: the name is a label, never an input of a hash that
    decides (scope c once hashed it into every history token, and kept 4,130 rows under one name
    and 4,180 under the other)."""
    original = beauty_deduplicated.tables
    renamed = {
        name: t.with_columns(pl.lit("amazon2018/All_Beauty").alias("dataset"))
        for name, t in beauty_renamed.tables.items()
    }
    for name in ("interactions", "dropped_interactions", "blanked_interactions"):
        assert sorted_rows(renamed[name]).equals(sorted_rows(original[name])), name
    assert beauty_renamed.stats.dropped == beauty_deduplicated.stats.dropped
    assert beauty_renamed.stats.info["duplicate_users"] == beauty_deduplicated.stats.info["duplicate_users"] > 0


def test_datasets_are_deduplicated_apart(beauty, beauty_deduplicated, beauty_renamed) -> None:
    """A second dataset holding the same real reviews: each keeps its own first copy of every text
    (texts are compared within a dataset only), and the two together give exactly what each gives
    alone, in dataset order."""
    frame, _ = beauty
    other = frame.with_columns(pl.lit("amazon2018/Copy").alias("dataset"))
    parts = [beauty_deduplicated, beauty_renamed]
    together = run(pl.concat([other, frame]))
    assert together.tables["interactions"].equals(pl.concat([p.tables["interactions"] for p in parts]))
    for reason in ("variant_duplicate", "duplicate_user"):
        assert together.stats.dropped[reason] == 2 * parts[0].stats.dropped[reason] > 0
    assert together.stats.changed["review_text_duplicate"] == sum(
        p.stats.changed["review_text_duplicate"] for p in parts
    )
    assert together.stats.info["exact_duplicate_texts"] == 2 * parts[0].stats.info["exact_duplicate_texts"]


def test_dedup_runs_in_user_buckets_after_a_prepare_step() -> None:
    definition = registry.get("dedup")
    assert definition.partition == "user"
    assert definition.prepare is not None
