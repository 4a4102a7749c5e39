"""Token-aware chunking: fewest even chunks, exact counts against an independent tokenizer call, cuts."""

from __future__ import annotations

import itertools
import random

import numpy as np
import polars as pl
import pytest
from tokenizers import Tokenizer

from recgpt_data.chunking import Chunked, TokenCounter, chunk_histories, chunk_tokens, cut_line, plan_chunks
from recgpt_data.histories import bucket_events, history_lines, user_buckets
from recgpt_data.ingest import ingest
from recgpt_data.serialize import HEADER, parse_history, parse_item_line
from recgpt_data.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def independent(shared) -> Tokenizer:
    """The shared GPT-NeoX-20B file loaded straight with ``tokenizers``, not through the library."""
    return Tokenizer.from_file(str(shared.parent / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"))


@pytest.fixture(scope="module")
def counter(shared) -> TokenCounter:
    """A counter on a user-chosen tokenizer path (the shared copy)."""
    return TokenCounter(load_tokenizer(shared.parent / "tokenizers" / "gpt-neox-20b"))


def fewest_by_brute_force(costs: list[int], header: int, separator: int, limit: int) -> int:
    n = len(costs)
    for k in range(1, n + 1):
        for cuts in itertools.combinations(range(1, n), k - 1):
            bounds = [0, *cuts, n]
            if all(chunk_tokens(costs[a:b], header, separator) <= limit for a, b in itertools.pairwise(bounds)):
                return k
    raise AssertionError("no partition fits")


def test_equal_lines_split_into_even_chunks():
    assert plan_chunks([10] * 10, header=5, separator=1, limit=50) == [4, 3, 3]
    assert plan_chunks([10] * 10, header=5, separator=1, limit=1000) == [10]


def test_plan_is_fewest_and_fits_on_random_histories():
    rng = random.Random(5)
    for _ in range(300):
        costs = [rng.randint(1, 40) for _ in range(rng.randint(1, 9))]
        limit = rng.randint(max(costs) + 6, 150)
        sizes = plan_chunks(costs, header=5, separator=1, limit=limit)
        assert sum(sizes) == len(costs)
        assert len(sizes) == fewest_by_brute_force(costs, 5, 1, limit)
        start = 0
        for size in sizes:
            assert chunk_tokens(costs[start : start + size], 5, 1) <= limit
            start += size


def test_uneven_lines_still_use_the_fewest_chunks():
    # equal counts (3, 3) would not fit; the fewest is still two chunks
    assert plan_chunks([40, 40, 40, 1, 1, 1], header=0, separator=0, limit=81) == [2, 4]


def test_header_and_line_break_costs_add_up_to_the_text(counter, independent):
    lines = [
        "Title: Pygmy; Author: Chuck; Review: Great.\n".strip(),
        "Title: 314; Rating: 5.0/5.0",
        "Title: x",
    ]
    text = HEADER.format(noun="books") + "\n\n" + "\n".join(lines)
    expected = len(independent.encode(text, add_special_tokens=False).ids)
    line_tokens = [len(independent.encode(line, add_special_tokens=False).ids) for line in lines]
    assert chunk_tokens(line_tokens, counter.header("books"), counter.separator) == expected


def test_line_counts_read_off_a_whole_history_equal_lines_tokenized_alone(counter, independent):
    lines = [
        "Title: A; Review: fine.  really; Rating: 4.0/5.0",
        "Title: \u00e9t\u00e9 caf\u00e9!",
        "Title: 3D",
    ]
    text = HEADER.format(noun="products") + "\n\n" + "\n".join(lines)
    header = np.array([counter.header("products")])
    alone = [len(independent.encode(line, add_special_tokens=False).ids) for line in lines]
    assert counter.line_tokens([text], header, np.array([3])).tolist() == alone
    # a history whose line breaks are not where the format puts them is left to count line by line
    assert counter.line_tokens([text], header, np.array([2])).tolist() == [-1, -1]
    assert counter.line_tokens([text.replace("\n\n", "\n")], header, np.array([3])).tolist() == [-1] * 3


@pytest.fixture(scope="module")
def magazine_lines(shared, tmp_path_factory) -> pl.DataFrame:
    out = tmp_path_factory.mktemp("magazine")
    folder = shared / "amazon2018"
    ingest("amazon2018", [folder], out)
    interactions = pl.scan_parquet(out / "interactions" / "**" / "*.parquet")
    items = pl.scan_parquet(out / "items" / "**" / "*.parquet")
    return history_lines(bucket_events(interactions, items, user_buckets(interactions, 1)).frame)


@pytest.fixture(scope="module")
def chunked_256(magazine_lines, counter) -> Chunked:
    """The real histories chunked to a small limit, so that many are split and some lines cut."""
    return chunk_histories(magazine_lines, counter, 256)


@pytest.mark.parametrize("max_tokens", [2048, 256])
def test_num_tokens_is_exact_and_every_document_fits(magazine_lines, counter, chunked_256, independent, max_tokens):
    chunked = chunked_256 if max_tokens == 256 else chunk_histories(magazine_lines, counter, max_tokens)
    documents = chunked.documents
    texts = documents["text"].to_list()
    exact = [len(e.ids) for e in independent.encode_batch(texts, add_special_tokens=False)]
    assert documents["num_tokens"].to_list() == exact
    assert max(exact) + 1 <= max_tokens
    assert documents["num_items"].sum() == magazine_lines.height == 2375 + 5269
    assert all(t.startswith(HEADER.format(noun="products") + "\n\n") for t in texts)


def test_chunks_keep_every_line_in_order(magazine_lines, chunked_256):
    documents = chunked_256.documents
    assert documents.filter(pl.col("chunk_index") > 0).height > 0
    rebuilt = []
    for text in documents["text"].to_list():
        rebuilt.extend(text.split("\n\n", 1)[1].split("\n"))
    uncut = [line for line, doc_line in zip(magazine_lines["line"].to_list(), rebuilt, strict=True) if line == doc_line]
    assert len(rebuilt) == magazine_lines.height
    cut = len(rebuilt) - len(uncut)
    assert cut == sum(chunked_256.cut.values()) > 0


def test_an_item_too_long_alone_has_its_review_cut(counter, independent):
    review = " ".join(f"word{i}" for i in range(400))
    lines = pl.DataFrame(
        {
            "source": ["amazon2018"] * 2,
            "dataset": ["amazon2018/X"] * 2,
            "user_id": ["u", "u"],
            "item_id": ["a", "b"],
            "noun": ["products"] * 2,
            "line": [f"Title: Long; Review: {review}; Rating: 5.0/5.0", "Title: Short"],
        }
    )
    chunked = chunk_histories(lines, counter, 128)
    assert chunked.cut == {"Review": 1}
    first = chunked.documents.row(0, named=True)
    assert first["num_tokens"] == len(independent.encode(first["text"], add_special_tokens=False).ids) <= 127
    noun, items = parse_history(first["text"])
    assert items[0]["Title"] == "Long" and items[0]["Rating"] == "5.0/5.0"
    assert review.startswith(items[0]["Review"]) and len(items[0]["Review"]) < len(review)
    assert chunked.documents["num_items"].sum() == 2


def test_cut_line_leaves_a_fitting_line_alone(counter):
    assert cut_line("Title: x; Rating: 1.0/5.0", 50, counter) == ("Title: x; Rating: 1.0/5.0", None)
    line, field = cut_line("Title: " + "very " * 100, 20, counter)
    assert field == "Title" and counter.one(line) <= 20 and parse_item_line(line)["Title"].startswith("very")


def test_empty_lines_are_dropped_and_counted(counter):
    lines = pl.DataFrame(
        {
            "source": ["s"] * 2,
            "dataset": ["d"] * 2,
            "user_id": ["u"] * 2,
            "item_id": ["a", "b"],
            "noun": ["products"] * 2,
            "line": ["", "Title: x"],
        }
    )
    chunked = chunk_histories(lines, counter)
    assert chunked.empty_lines == 1
    assert chunked.documents["text"].to_list() == [HEADER.format(noun="products") + "\n\nTitle: x"]


def test_a_history_off_the_fast_path_is_counted_line_by_line(counter, independent):
    # a raw newline inside a line (never written by serialize) puts an extra line-break token in the
    # whole-history tokenization, so that user's lines are counted one by one
    lines = pl.DataFrame(
        {
            "source": ["s"] * 3,
            "dataset": ["d"] * 3,
            "user_id": ["u", "u", "v"],
            "item_id": ["a", "b", "c"],
            "noun": ["products"] * 3,
            "line": ["Title: a\nb", "Title: c", "Title: d"],
        }
    )
    documents = chunk_histories(lines, counter).documents
    exact = [len(independent.encode(t, add_special_tokens=False).ids) for t in documents["text"].to_list()]
    assert documents["num_tokens"].to_list() == exact
