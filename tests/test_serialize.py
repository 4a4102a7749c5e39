"""RecGPT's text format: the authors' own sample rows, the scalar rules, and the polars path."""

from __future__ import annotations

import json

import polars as pl
import pytest
from authors_pairs import authors_rows
from magazines import ingest_magazines

from recgpt_data.serialize import (
    HEADER,
    clean_value,
    field_values,
    format_rating,
    history_text,
    item_line,
    item_line_expr,
    parse_history,
    parse_item_line,
    render_fields,
)
from recgpt_data.sources import get_source

PROMPT_TAIL = "\n\n### Response:"


def history_of(prompt: str) -> str:
    """The history inside an authors' prompt: after the instruction line, before the response tag."""
    assert prompt.startswith("### Instruction:\n") and prompt.endswith(PROMPT_TAIL)
    instruction_end = prompt.index("\n", len("### Instruction:\n"))
    return prompt[instruction_end + 1 : -len(PROMPT_TAIL)]


def test_authors_sample_histories_parse_and_render_back_byte_identical(shared):
    rows = authors_rows(shared)
    assert len(rows) == 20
    for row in rows:
        history = history_of(row["prompt"])
        noun, items = parse_history(history)
        assert history_text(noun, [render_fields(item) for item in items]) == history
        assert len(items) == history.count("\n") - 1


def test_authors_sample_nouns_and_fields(shared):
    parsed = [parse_history(history_of(row["prompt"])) for row in authors_rows(shared)]
    assert [noun for noun, _ in parsed] == ["food recipes"] * 10 + ["books"] * 10
    assert all(list(item) == ["Title"] for _, items in parsed[:10] for item in items)
    for _, items in parsed[10:]:
        assert all(list(item) == ["Title", "Author", "Review", "Rating"] for item in items)
        assert items[-1]["Rating"] == ""  # the rating prompt ends on an open "Rating:"
    assert parsed[0][1][0] == {"Title": "white cheddar potato gratin"}
    assert len(parsed[0][1]) == 4


def test_authors_sample_responses_are_item_lines(shared):
    rows = authors_rows(shared)
    assert parse_item_line(rows[0]["response"]) == {"Title": "spinach ricotta pie with a hint of feta"}
    assert all(row["response"].endswith("/5.0") for row in rows[10:])


def test_review_holding_separator_and_field_like_text_round_trips():
    values = {"Title": "A; B", "Author": "C", "Review": "fine; Rating: 1.0/5.0; Title: x", "Rating": 4.0}
    line = item_line(values, ("Title", "Author", "Review", "Rating"), 5.0)
    assert line == "Title: A; B; Author: C; Review: fine; Rating: 1.0/5.0; Title: x; Rating: 4.0/5.0"
    assert parse_item_line(line) == {
        "Title": "A; B",
        "Author": "C",
        "Review": "fine; Rating: 1.0/5.0; Title: x",
        "Rating": "4.0/5.0",
    }


def test_parse_rejects_text_that_is_not_recgpt():
    with pytest.raises(ValueError, match="header missing"):
        parse_history("Here is a user:\n\nTitle: x")
    with pytest.raises(ValueError, match="known field"):
        parse_item_line("Name: x; Rating: 5.0/5.0")


def test_clean_value_makes_one_line():
    assert clean_value("  a \n\t b\r\n\u2028c\u00a0\u3000d  ") == "a b c d"
    assert clean_value(" \n ") == ""


def test_format_rating():
    assert format_rating(5, 5.0) == "5.0/5.0"
    assert format_rating(8.0, 10.0) == "8.0/10.0"
    assert format_rating(4.5, 5) == "4.5/5.0"


def test_item_line_leaves_out_missing_empty_and_null_fields():
    fields = ("Title", "Brand", "Review", "Rating")
    assert item_line({"Title": "X", "Brand": " ", "Review": None}, fields, 5.0) == "Title: X"
    assert item_line({"Title": "X", "Rating": 3.0}, fields, None) == "Title: X"
    assert item_line({"Title": "X\nY", "Rating": 3.0}, fields, 5.0) == "Title: X Y; Rating: 3.0/5.0"
    assert item_line({"Title": "X", "Genres": ["Drama", None, "War"]}, ("Title", "Genres"), None) == (
        "Title: X; Genres: Drama, War"
    )
    with pytest.raises(ValueError, match="unknown template field"):
        item_line({"Title": "X"}, ("Title", "Price"), None)


def test_field_values_author_falls_back_to_brand():
    assert field_values({}, {"brand": "B"})["Author"] == "B"
    assert field_values({}, {"author": "A", "brand": "B"})["Author"] == "A"
    assert field_values({"rating": 2.0, "rating_max": 10.0}, {})["Rating"] == "2.0/10.0"


def test_history_text_header_blank_line_items():
    text = history_text("products", ["Title: a", "Title: b"])
    assert text == HEADER.format(noun="products") + "\n\nTitle: a\nTitle: b"
    assert text.startswith("Given the interaction history of a user with products as follows:\n\n")


@pytest.fixture(scope="module")
def magazine_events(shared, tmp_path_factory) -> pl.DataFrame:
    """The real Amazon 2018 Magazine_Subscriptions 5-core reviews joined with their metadata."""
    out = tmp_path_factory.mktemp("magazine")
    ingest_magazines(shared, out)
    interactions = pl.read_parquet(out / "interactions" / "**" / "*.parquet")
    items = pl.read_parquet(out / "items" / "**" / "*.parquet").unique(["dataset", "item_id"], keep="first")
    return interactions.join(items.drop("source", "extras"), on=["dataset", "item_id"], how="left")


def test_vectorised_lines_equal_scalar_lines_on_real_reviews(magazine_events):
    template = get_source("amazon2018").template_for("amazon2018/Magazine_Subscriptions")
    expr = item_line_expr(template.fields, magazine_events.columns)
    fast = magazine_events.select(expr.alias("line"))["line"].to_list()
    slow = [
        item_line(field_values(row, row), template.fields, row["rating_max"])
        for row in magazine_events.iter_rows(named=True)
    ]
    assert len(fast) == 2375
    assert fast == slow


def test_first_real_review_line_written_by_hand(shared, magazine_events):
    raw = json.loads((shared / "amazon2018" / "Magazine_Subscriptions_5.json").open().readline())
    assert raw["asin"] == "B00005N7P0"
    row = magazine_events.filter(pl.col("src_line") == 1)
    line = row.select(item_line_expr(("Title", "Brand", "Review", "Rating"), row.columns)).item()
    review = " ".join(raw["reviewText"].split())
    assert line.endswith(f"; Review: {review}; Rating: 4.0/5.0")
    assert "  " not in line


def test_vectorised_path_handles_unicode_space_and_missing_columns():
    frame = pl.DataFrame(
        {"title": ["a\u2029b", None, "  "], "categories": [["x", "y"], None, []], "rating": [1.0, None, 7.5]}
    )
    lines = frame.select(item_line_expr(("Title", "Genres", "Rating"), frame.columns)).to_series().to_list()
    assert lines == ["Title: a b; Genres: x, y", "", ""]
    scalar = [item_line(field_values(r, r), ("Title", "Genres", "Rating"), None) for r in frame.iter_rows(named=True)]
    assert scalar == lines
