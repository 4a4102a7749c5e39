"""The stable hash behind every bucket, split and seeded choice: FNV-1a 64, checked against the
published test vectors, and independent of chunking and nulls; the seeded draws (FNV-1a finished by
fmix64) against the rule written out by hand, and uniform on real MovieLens and Amazon ids."""

import csv
import gzip
import json
from pathlib import Path

import polars as pl
from hash_oracle import draw, old_draw
from hash_oracle import mixed64 as hand_mixed64
from scipy import stats

from recgpt_data.corpus import shuffle_key
from recgpt_data.hashing import bucket, fnv1a64, mixed64, unit_interval


def test_fnv1a64_matches_published_vectors():
    # Vectors from the FNV reference (Fowler/Noll/Vo): "", "a", "foobar".
    got = fnv1a64(pl.Series(["", "a", "foobar"])).to_list()
    assert got == [0xCBF29CE484222325, 0xAF63DC4C8601EC8C, 0x85944171F73967E8]


def test_fnv1a64_of_non_ascii_hashes_utf8_bytes():
    text = "café-ユーザー"
    expected = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        expected = ((expected ^ byte) * 0x100000001B3) % (1 << 64)
    assert fnv1a64(pl.Series([text])).item() == expected


def test_nulls_stay_null_and_slices_hash_alike():
    series = pl.Series(["u1", None, "u3", "u4"])
    full = fnv1a64(series)
    assert full[1] is None
    assert fnv1a64(series.slice(2, 2)).to_list() == full.slice(2, 2).to_list()


def test_seed_changes_the_hash_and_buckets_are_in_range():
    ids = pl.Series([f"user{i}" for i in range(1000)])
    assert fnv1a64(ids, seed=1).to_list() != fnv1a64(ids).to_list()
    buckets = bucket(ids, 16)
    assert buckets.min() >= 0 and buckets.max() == 15
    values = unit_interval(ids, seed=7)
    assert values.min() >= 0.0 and values.max() < 1.0


def test_mixed64_and_unit_interval_follow_the_hand_written_rule():
    texts = ["", "a", "foobar", "1", "2", "A1B2C3D4E5F6G7", "café-ユーザー"]
    for seed in (0, 7, 2024):
        assert mixed64(pl.Series(texts), seed).to_list() == [hand_mixed64(t, seed) for t in texts]
        assert unit_interval(pl.Series(texts), seed).to_list() == [draw(t, seed) for t in texts]
    with_null = mixed64(pl.Series(["u1", None]))
    assert with_null[1] is None and with_null[0] == hand_mixed64("u1")


def test_shuffle_key_is_the_mixed_hash_of_the_document_key():
    frame = pl.DataFrame({"dataset": ["movielens", "movielens"], "user_id": ["1", "10"], "chunk_index": [0, 3]})
    expected = [hand_mixed64(f"shuffle\x1f{d}\x1f{u}\x1f{c}", 5) for d, u, c in frame.iter_rows()]
    assert shuffle_key(frame, 5).to_list() == expected


def movielens_user_ids(shared: Path, copies: int) -> list[str]:
    """ml-latest-small's user ids, and ``copies - 1`` more sets renamed ``userId + copy x 100,000``
    as the benchmarks scale them."""
    with (shared / "movielens" / "ml-latest-small" / "ratings.csv").open(newline="") as f:
        users = sorted({int(row["userId"]) for row in csv.DictReader(f)})
    return [str(user + copy * 100_000) for copy in range(copies) for user in users]


def amazon_reviewer_ids(path: Path) -> list[str]:
    with path.open() if path.suffix == ".json" else gzip.open(path, "rt") as f:
        return sorted({json.loads(line)["reviewerID"] for line in f})


def uniform(draws: list[float]) -> bool:
    """Whether the pools below 0.005 and 0.1 are inside their binomial 99.9% intervals and a
    Kolmogorov-Smirnov test against the uniform distribution gives p > 0.001."""
    n = len(draws)
    for fraction in (0.005, 0.1):
        low, high = stats.binom.interval(0.999, n, fraction)
        if not low <= sum(d < fraction for d in draws) <= high:
            return False
    return stats.kstest(draws, "uniform").pvalue > 0.001


def test_draws_on_real_ids_are_uniform_and_the_top_bits_of_fnv1a_were_not(shared):
    seed = 2024  # pipelines/recgpt.toml
    movielens = {copies: movielens_user_ids(shared, copies) for copies in (1, 8)}
    assert [len(ids) for ids in movielens.values()] == [671, 5368]
    amazon = [
        amazon_reviewer_ids(shared / "amazon2014" / "reviews_Musical_Instruments_5.json.gz"),
        amazon_reviewer_ids(shared / "amazon2018" / "All_Beauty_5.json"),
    ]
    assert [len(ids) for ids in amazon] == [1429, 991]
    for ids in [*movielens.values(), *amazon]:
        draws = unit_interval(pl.Series(ids), seed).to_list()
        assert draws == [draw(i, seed) for i in ids]
        assert uniform(draws)
    for ids in movielens.values():
        assert not uniform([old_draw(i, seed) for i in ids])
    assert sum(old_draw(i, seed) < 0.005 for i in movielens[8]) == 0  # 27 expected
