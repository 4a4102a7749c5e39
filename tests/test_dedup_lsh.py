"""LSH banding, bucket edges, union-find and text clustering on planted duplicates of real reviews."""

from __future__ import annotations

import gzip
import json

import numpy as np
import polars as pl
import pytest
from datasketch.lsh import _optimal_param

from recgpt_data.dedup.lsh import NearDuplicateConfig, band_keys, bucket_edges, cluster_texts, optimal_banding
from recgpt_data.dedup.normalize import normalize, shingles
from recgpt_data.dedup.unionfind import connected_components


def jaccard(a: str, b: str) -> float:
    x, y = set(shingles(a)), set(shingles(b))
    return len(x & y) / len(x | y)


@pytest.fixture(scope="module")
def distinct_reviews(shared) -> list[str]:
    """40 long real reviews whose pairwise shingle Jaccard is below 0.2 (checked in plain Python)."""
    path = shared / "amazon2014" / "reviews_Musical_Instruments_5.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        texts = [json.loads(line)["reviewText"] for line in handle]
    chosen: list[str] = []
    for text in texts:
        if len(text.split()) >= 120 and all(jaccard(text, c) < 0.2 for c in chosen):
            chosen.append(text)
        if len(chosen) == 40:
            return chosen
    raise AssertionError("not enough long reviews")


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
def test_banding_is_datasketchs_choice(threshold: float) -> None:
    banding = optimal_banding(threshold, 128)
    assert (banding.bands, banding.rows) == _optimal_param(threshold, 128, 0.5, 0.5)
    assert f"{banding.bands} bands x {banding.rows} rows" in banding.describe()


def test_one_giant_bucket_costs_one_edge_per_member() -> None:
    signatures = np.zeros((100_000, 128), dtype=np.uint32)
    u, v = bucket_edges(band_keys(signatures, 9, 13))
    assert len(u) == 99_999
    assert set(v.tolist()) == {0}


def test_union_find_matches_a_plain_python_one() -> None:
    rng = np.random.RandomState(3)
    n = 5000
    u, v = rng.randint(0, n, 3000), rng.randint(0, n, 3000)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in zip(u.tolist(), v.tolist()):
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    expected = [find(x) for x in range(n)]
    assert connected_components(n, u, v).tolist() == [
        min(c for c in range(n) if expected[c] == expected[x]) for x in range(n)
    ]


def test_union_find_closes_a_long_chain() -> None:
    n = 100_000
    labels = connected_components(n, np.arange(1, n), np.arange(0, n - 1))
    assert (labels == 0).all()


def test_planted_duplicates_of_real_reviews_cluster_exactly(distinct_reviews) -> None:
    base = distinct_reviews
    one_word = base[0].split()
    one_word[30] = "zebra"
    half = base[1].split()
    half = [w if k % 2 else "quux" for k, w in enumerate(half)]
    planted = [
        " ".join(one_word),  # 40: near copy of 0
        base[2].upper().replace(".", "!!"),  # 41: same normalised text as 2
        " ".join(half),  # 42: half the words replaced: not a duplicate of 1
        "Great product!",  # 43
        "great   PRODUCT",  # 44: exact copy of 43 after normalisation
        "Great product, love it",  # 45: another short text
        "\U0001f600\U0001f600",  # 46: empty after normalisation
        None,  # 47
    ]
    assert jaccard(base[0], planted[0]) > 0.9 and jaccard(base[1], planted[2]) < 0.1
    texts = base + planted
    clusters = cluster_texts(normalize(pl.Series(texts, dtype=pl.String)), NearDuplicateConfig(threshold=0.8))
    expected = list(range(40)) + [0, 2, 42, 43, 43, 45, -1, -1]
    assert clusters.label.tolist() == expected
    assert clusters.exact.tolist() == list(range(41)) + [2, 42, 43, 43, 45, -1, -1]
