"""Instruction pairs: the authors' own rows round-trip byte-identical, and the stage cuts the two
histories their consecutive windows chain into back into exactly those windows; pairs built from the
real Amazon samples follow the templates, fit the token budget, honour the counts and never show a
held-out interaction."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from authors_pairs import authors_rows
from conftest import REPO
from whole_stage import run_whole_here

from recgpt_data.ingest import ingest
from recgpt_data.instruct.pairs import (
    InstructPairsParams,
    PairMaker,
    UserHistory,
    build_pairs,
    candidate_pairs,
    choose,
    in_order,
)
from recgpt_data.instruct.planner import PAPER_COUNTS, plan, total
from recgpt_data.instruct.templates import (
    FRAMING_TOKENS,
    NEXT_ITEM,
    RATING,
    PairBuilder,
    fit_lines,
    next_item_pair,
    parse_pair,
    rating_pair,
    render_parsed,
    token_count,
)
from recgpt_data.p5.splits import build_benchmark, held_out_rows
from recgpt_data.pipeline.spec import load_spec
from recgpt_data.schema import conform, empty
from recgpt_data.serialize import item_line, render_fields
from recgpt_data.split import leaked
from recgpt_data.stage import Context
from recgpt_data.stages.write_instruct import JSONL, PARQUET, write_instruct_stage
from recgpt_data.tokenizer import DEFAULT_TOKENIZER, load_tokenizer

MAGAZINES = "amazon2018/Magazine_Subscriptions"
FOOD_WINDOWS = slice(5, 10)  # rows 6-10 of the authors' file: five windows of one Food.com user
BOOK_WINDOWS = slice(10, 14)  # rows 11-14: four rating windows of one Amazon books user


@pytest.fixture(scope="module")
def magazines(shared, tmp_path_factory) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    out = tmp_path_factory.mktemp("magazines")
    raw = shared / "amazon2018"
    ingest("amazon2018", [raw / "Magazine_Subscriptions_5.json", raw / "meta_Magazine_Subscriptions.json.gz"], out)
    interactions = pl.read_parquet(out / "interactions" / "**" / "*.parquet")
    return interactions.lazy(), pl.read_parquet(out / "items" / "**" / "*.parquet").lazy()


@pytest.fixture(scope="module")
def instruments(shared, tmp_path_factory) -> pl.DataFrame:
    out = tmp_path_factory.mktemp("instruments")
    ingest("amazon2014", [shared / "amazon2014" / "reviews_Musical_Instruments_5.json.gz"], out)
    return pl.read_parquet(out / "interactions" / "**" / "*.parquet")


def test_authors_rows_parse_and_render_back_byte_identical(shared):
    rows = authors_rows(shared)
    assert len(rows) == 20
    for row in rows:
        parsed = parse_pair(row["prompt"], row["response"])
        again = render_parsed(parsed)
        assert again.prompt == row["prompt"]
        assert again.response == row["response"]


def test_authors_rows_tasks_nouns_and_targets(shared):
    parsed = [parse_pair(row["prompt"], row["response"]) for row in authors_rows(shared)]
    assert [p.task for p in parsed] == [NEXT_ITEM] * 10 + [RATING] * 10
    assert [p.noun for p in parsed] == ["food recipes"] * 10 + ["books"] * 10
    assert parsed[0].target == {"Title": "spinach ricotta pie with a hint of feta"}
    assert [item["Title"] for item in parsed[0].history] == [
        "white cheddar potato gratin",
        "possum s cream cheese chocolate chip bread",
        "zucchini lasagna lasagne low carb",
        "sweet potato and apple casserole",
    ]
    assert parsed[10].target == "5.0/5.0" and parsed[16].target == "1.0/5.0" and parsed[17].target == "3.0/5.0"
    assert all(p.history[-1]["Rating"] == "" for p in parsed[10:])


def test_builders_write_the_authors_rows_from_field_values(shared):
    rows = authors_rows(shared)
    food = parse_pair(rows[0]["prompt"], rows[0]["response"])
    lines = [item_line(item, ("Title",), None) for item in food.history]
    built = next_item_pair("food recipes", lines, item_line(food.target, ("Title",), None))
    assert (built.prompt, built.response) == (rows[0]["prompt"], rows[0]["response"])

    books = parse_pair(rows[13]["prompt"], rows[13]["response"])
    *history, target = books.history
    fields = ("Title", "Author", "Review", "Rating")
    lines = [item_line(item, fields, 5.0) for item in history]
    built = rating_pair("books", lines, item_line(target, fields[:-1], 5.0), "5.0/5.0")
    assert (built.prompt, built.response) == (rows[13]["prompt"], rows[13]["response"])


def window_items(row: dict) -> list[dict[str, str]]:
    """The items one of the authors' rows shows, oldest first, its target last (a rating target with
    its rating filled in from the response)."""
    parsed = parse_pair(row["prompt"], row["response"])
    if parsed.task == NEXT_ITEM:
        return [*parsed.history, parsed.target]
    *history, rated = parsed.history
    return [*history, {**rated, "Rating": parsed.target}]


def chained(windows: list[list[dict[str, str]]]) -> list[dict[str, str]]:
    """The one history consecutive windows were cut from: each starts on the previous one's last two items."""
    history = list(windows[0])
    for window in windows[1:]:
        assert window[:2] == history[-2:]
        history += window[2:]
    return history


def authors_pair(noun: str, items: list[dict[str, str]]) -> tuple[str, str]:
    """The pair the authors' format writes over ``items`` (target last), as (prompt, response)."""
    *history, target = items
    lines = [render_fields(item) for item in history]
    if "Rating" not in target:
        pair = next_item_pair(noun, lines, render_fields(target))
    else:
        unrated = {name: value for name, value in target.items() if name != "Rating"}
        pair = rating_pair(noun, lines, render_fields(unrated), target["Rating"])
    return pair.prompt, pair.response


def test_the_authors_windows_are_the_longest_that_fit_2048_tokens(shared):
    rows = authors_rows(shared)
    encoder = load_tokenizer(shared.parent / "tokenizers" / "gpt-neox-20b" / "tokenizer.json")

    def tokens(prompt: str, response: str) -> int:
        return len(encoder.encode(prompt, add_special_tokens=False).ids) + len(
            encoder.encode(response, add_special_tokens=False).ids
        )

    fitted, one_more = [], []
    for noun, window_rows in (("food recipes", rows[FOOD_WINDOWS]), ("books", rows[BOOK_WINDOWS])):
        windows = [window_items(row) for row in window_rows]
        history = chained(windows)
        fitted.append([tokens(row["prompt"], row["response"]) for row in window_rows])
        start, extended = 0, []
        for window in windows[:-1]:
            end = start + len(window)
            extended.append(tokens(*authors_pair(noun, history[start : end + 1])))
            start = end - 2
        one_more.append(extended)
    assert fitted == [[2039, 2042, 2037, 2040, 825], [2001, 2014, 2008, 456]]
    assert one_more == [[2049, 2051, 2047, 2051], [2085, 2090, 2086]]
    # 2048 holds every window and no window with its next item only with 2 to 6 tokens of framing
    assert max(map(max, fitted)) + FRAMING_TOKENS <= 2048 < min(map(min, one_more)) + FRAMING_TOKENS
    assert all(token_count(encoder, row["prompt"], row["response"]) <= 2048 for row in rows)


def canonical(source: str, dataset: str, history: list[dict[str, str]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One user's history as the canonical interactions (in the instruction pool) and items tables."""
    ids = [f"{dataset}#{n}" for n in range(len(history))]
    ratings = [item["Rating"].split("/") if "Rating" in item else (None, None) for item in history]
    interactions = pl.DataFrame(
        {
            "item_id": ids,
            "timestamp": [datetime(2015, 1, 1, tzinfo=UTC) + timedelta(days=n) for n in range(len(history))],
            "src_line": range(1, len(history) + 1),
            "rating": [None if r is None else float(r) for r, _ in ratings],
            "rating_max": [None if m is None else float(m) for _, m in ratings],
            "review_text": [item.get("Review") for item in history],
        }
    ).with_columns(
        source=pl.lit(source), dataset=pl.lit(dataset), user_id=pl.lit("authors"), src_file=pl.lit("authors")
    )
    items = pl.DataFrame(
        {
            "item_id": ids,
            "title": [item["Title"] for item in history],
            "author": [item.get("Author") for item in history],
        }
    ).with_columns(source=pl.lit(source), dataset=pl.lit(dataset))
    pool = pl.lit("instruct").alias("split")
    return conform(interactions, "interactions").with_columns(pool), conform(items, "items")


def test_the_stage_cuts_the_authors_histories_back_into_their_windows(shared):
    rows = authors_rows(shared)
    tokenizer = shared.parent / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"
    spec = load_spec(REPO / "pipelines" / "recgpt.toml", {"tokenizer": str(tokenizer)})
    params = InstructPairsParams(**next(s for s in spec.stages if s.stage == "instruct_pairs").params)
    food = chained([window_items(row) for row in rows[FOOD_WINDOWS]])
    books = chained([window_items(row) for row in rows[BOOK_WINDOWS]])
    assert (len(food), len(books)) == (911, 75)
    tables = [canonical("foodcom", "foodcom", food), canonical("amazon2018", "amazon2018/Books", books)]
    interactions = pl.concat([t[0] for t in tables])
    items = pl.concat([t[1] for t in tables])
    out = run_whole_here(
        "instruct_pairs",
        {"interactions": interactions.lazy(), "items": items.lazy()},
        params,
        Context(seed=spec.seed, tokenizer=tokenizer),
    )
    pairs = out.tables["instruct"]

    def made(dataset: str, task: str) -> list[dict]:
        chosen = pairs.filter((pl.col("dataset") == dataset) & (pl.col("task") == task)).reverse()
        return chosen.select("prompt", "response").to_dicts()

    assert made("foodcom", NEXT_ITEM) == [
        {"prompt": r["prompt"], "response": r["response"]} for r in rows[FOOD_WINDOWS]
    ]
    assert made("amazon2018/Books", RATING) == [
        {"prompt": r["prompt"], "response": r["response"]} for r in rows[BOOK_WINDOWS]
    ]


def test_max_pairs_per_user_keeps_the_newest_of_the_authors_windows(shared):
    rows = authors_rows(shared)
    interactions, items = canonical("foodcom", "foodcom", chained([window_items(r) for r in rows[FOOD_WINDOWS]]))
    params = InstructPairsParams(max_pairs_per_user=2)
    tokenizer = shared.parent / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"
    out = run_whole_here(
        "instruct_pairs",
        {"interactions": interactions.lazy(), "items": items.lazy()},
        params,
        Context(tokenizer=tokenizer),
    )
    made = out.tables["instruct"].filter(pl.col("task") == NEXT_ITEM).reverse()
    assert made["prompt"].to_list() == [row["prompt"] for row in rows[8:10]]
    assert out.stats.dropped["next_item:over_max_pairs_per_user"] == 3


def steam_history(item_ids: list[str], lines: list[str]) -> UserHistory:
    """A Steam user's history (no rating pairs, no ratings) whose items render as ``lines``."""
    return UserHistory(
        source="steam",
        dataset="steam",
        user_id="u",
        noun="video games",
        rating_pairs=False,
        item_ids=item_ids,
        full=lines,
        unrated=lines,
        short=lines,
        ratings=[None] * len(lines),
    )


def test_an_item_too_long_for_any_window_is_skipped_and_counted():
    huge = "Title: " + "word " * 3000
    history = steam_history(["a", "huge", "c", "d", "e"], ["Title: A", huge, "Title: C", "Title: D", "Title: E"])
    maker = PairMaker(InstructPairsParams())
    pairs = list(maker.pairs(history))
    assert [pair["item_ids"] for pair in pairs] == [["c", "d", "e"]]
    assert pairs[0]["prompt"] == next_item_pair("video games", ["Title: C", "Title: D"], "Title: E").prompt
    assert maker.drops.dropped["next_item:too_long"] == 2  # windows from a (target huge) and from huge


def test_parse_rejects_other_prompts():
    with pytest.raises(ValueError, match="not a RecGPT instruction prompt"):
        parse_pair("Predict the next item.", "Title: x")
    with pytest.raises(ValueError, match="unknown instruction"):
        parse_pair(
            "### Instruction:\nSummarise.\nGiven the interaction history of a user with books as follows:"
            "\n\nTitle: a\n\n### Response:",
            "x",
        )


def test_fit_keeps_the_most_recent_items_that_fit():
    tokenizer = load_tokenizer()
    lines = [f"Title: recipe number {i} with a long enough name to cost tokens" for i in range(400)]
    builder = PairBuilder(NEXT_ITEM, "food recipes", "Title: the target")
    pair, kept = fit_lines(builder, lines, tokenizer, 2048)
    assert pair.prompt == builder(lines[-kept:]).prompt
    assert token_count(tokenizer, pair.prompt, pair.response) <= 2048
    longer = builder(lines[-kept - 1 :])
    assert token_count(tokenizer, longer.prompt, longer.response) > 2048
    assert fit_lines(builder, ["Title: " + "word " * 3000], tokenizer, 2048) is None


def test_one_pair_per_user_and_task_on_real_magazines(shared, magazines):
    interactions, items = magazines
    raw = shared / "amazon2018" / "Magazine_Subscriptions_5.json"
    users = {json.loads(line)["reviewerID"] for line in raw.open()}
    pairs = build_pairs(interactions, items, InstructPairsParams(pool="all", max_pairs_per_user=1), 3).instruct
    assert (pairs["task"] == RATING).sum() == len(users) == 348
    assert set(pairs["user_id"]) <= users
    tokenizer = load_tokenizer()
    assert all(token_count(tokenizer, p, r) <= 2048 for p, r in pairs.select("prompt", "response").rows())
    for row in pairs.head(40).iter_rows(named=True):
        parsed = parse_pair(row["prompt"], row["response"])
        assert render_parsed(parsed).prompt == row["prompt"]
        assert parsed.noun == "products"
        if row["task"] == RATING:
            assert list(parsed.history[-1])[-1] == "Rating" and row["response"].endswith("/5.0")
        else:
            assert set(parsed.target) <= {"Title", "Brand"}
            assert all(set(item) <= {"Title", "Brand"} for item in parsed.history)


def test_rating_target_is_the_users_last_rated_event(magazines):
    interactions, items = magazines
    pairs = build_pairs(interactions, items, InstructPairsParams(pool="all", max_pairs_per_user=1), 3).instruct
    row = pairs.filter(pl.col("task") == RATING).row(0, named=True)
    last = (
        interactions.filter(pl.col("user_id") == row["user_id"])
        .sort(["timestamp", "src_file", "src_line"])
        .collect()
        .row(-1, named=True)
    )
    assert row["item_id"] == last["item_id"]
    assert row["response"] == f"{last['rating']}/5.0"


def test_counts_per_source_and_task_are_honoured_and_seeded(magazines):
    interactions, items = magazines
    params = InstructPairsParams(pool="all", counts={"amazon2018": {"rating": 40, "next_item": 25}})
    built = build_pairs(interactions, items, params, 1)
    first = built.instruct
    assert (first["task"] == RATING).sum() == 40 and (first["task"] == NEXT_ITEM).sum() == 25
    info = built.info["pairs"]["amazon2018"]
    assert built.drops.dropped["rating:over_count"] == info["rating"]["candidates"] - 40
    windows = candidate_pairs(interactions, items, params).instruct  # found again: no draw in them
    assert first.equals(in_order(choose(windows, params, 1)[0]))
    assert not first.equals(in_order(choose(windows, params, 2)[0]))


def test_held_out_interactions_never_reach_a_pair(instruments):
    built = build_benchmark(instruments.lazy(), "amazon2014/Musical_Instruments", seed=4)
    held = held_out_rows(built.events, "instruments", "amazon2014/Musical_Instruments")
    some_users = instruments.select(pl.col("user_id").unique().sort().head(300))
    instruments = instruments.join(some_users, on="user_id", how="semi")
    params = InstructPairsParams(pool="all", max_pairs_per_user=2)
    guarded = run_whole_here(
        "instruct_pairs",
        {"interactions": instruments.lazy(), "items": empty("items").lazy(), "held_out": held.lazy()},
        params,
        Context(),
    )
    assert (
        guarded.stats.dropped["held_out"]
        == instruments.join(held.select("user_id", "item_id").unique(), on=["user_id", "item_id"], how="semi").height
    )
    assert leaked(guarded.tables["instruct"].lazy(), held.lazy()).height == 0
    unguarded = build_pairs(instruments.lazy(), empty("items").lazy(), params, 0).instruct
    assert leaked(unguarded.lazy(), held.lazy()).height > 0


def test_no_rating_pairs_where_the_template_says_so_or_the_rating_is_null():
    history = steam_history(["a", "b", "c"], ["Title: A", "Title: B", "Title: C"])
    maker = PairMaker(InstructPairsParams())
    assert {pair["task"] for pair in maker.pairs(history)} == {NEXT_ITEM}
    rated = UserHistory(**{**history.__dict__, "rating_pairs": True, "ratings": ["4.0/5.0", "5.0/5.0", None]})
    ratings = [pair for pair in maker.pairs(rated) if pair["task"] == RATING]
    assert [pair["item_id"] for pair in ratings] == ["b"]
    assert ratings[0]["response"] == "5.0/5.0"
    assert maker.drops.dropped["rating:null_target_rating"] == 1


def test_write_instruct_writes_parquet_and_llm_foundry_jsonl(magazines, tmp_path):
    interactions, items = magazines
    pairs = build_pairs(interactions, items, InstructPairsParams(pool="all", max_pairs_per_user=1), 3).instruct
    write_instruct_stage({"instruct": pairs.lazy()}, None, Context(out_dir=tmp_path))
    table = pl.read_parquet(tmp_path / PARQUET)
    assert table.columns == ["prompt", "response", "task", "source", "dataset"]
    assert table.height == pairs.height
    lines = (tmp_path / JSONL).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == pairs.select("prompt", "response").to_dicts()


def test_plan_at_the_papers_scale_yields_100k_pairs():
    rows = plan(PAPER_COUNTS)
    assert total(rows) >= 100_000
    by_key = {(row.source, row.task): row.yields for row in rows}
    assert by_key[("steam", RATING)] == by_key[("wikirec", RATING)] == 0
    assert by_key[("amazon2018", NEXT_ITEM)] == 5_000


def test_plan_caps_requests_at_what_the_data_holds():
    params = InstructPairsParams(counts={"amazon2018": {"rating": 40, "next_item": None}})
    rows = plan(params, available={("amazon2018", RATING): 30, ("amazon2018", NEXT_ITEM): 300})
    assert [(r.task, r.requested, r.available, r.yields) for r in rows] == [
        (RATING, 40, 30, 30),
        (NEXT_ITEM, None, 300, 300),
    ]


def test_plan_instruct_command_reports_the_papers_scale():
    from typer.testing import CliRunner

    from recgpt_data.cli import app

    result = CliRunner().invoke(app, ["plan-instruct"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "total: 120,000 pairs" in result.output


def test_plan_instruct_measures_windows_with_the_tokenizer_beside_the_spec(shared, tmp_path, monkeypatch):
    """``plan-instruct SPEC --tables`` cuts windows with the spec's tokenizer, resolved beside the
    spec: a missing one is named by its path there, and a broken decoy at the same relative path in
    the working directory is never read."""
    from typer.testing import CliRunner

    from recgpt_data.cli import app

    tables = tmp_path / "tables"
    raw = shared / "amazon2018"
    ingest("amazon2018", [raw / "Magazine_Subscriptions_5.json", raw / "meta_Magazine_Subscriptions.json.gz"], tables)
    spec = tmp_path / "project" / "spec.toml"
    spec.parent.mkdir()
    spec.write_text('name = "x"\ntokenizer = "tok"\n[[stages]]\nstage = "instruct_pairs"\nparams.pool = "all"\n')
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    command = ["plan-instruct", str(spec), "--tables", str(tables)]
    missing = CliRunner().invoke(app, command, terminal_width=200)
    assert missing.exit_code != 0
    assert f"no tokenizer.json at {spec.parent / 'tok'}" in str(missing.exception) + missing.output
    shutil.copytree(DEFAULT_TOKENIZER.parent, spec.parent / "tok")
    result = CliRunner().invoke(app, command, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "amazon2018" in result.output
