"""The JSON-family and Python-literal sources (Amazon 2014/2018/2023, Yelp, Steam, HotelRec, WikiRec)
read into the canonical tables. Expected values come from reading the files with plain Python
(``json``, ``ast.literal_eval``, ``zlib``), never from the library's own output."""

from __future__ import annotations

import ast
import functools
import json
import re
import zlib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from recgpt_data.ingest import canonical_batch, ingest
from recgpt_data.sources import get_source
from recgpt_data.sources.base import FileInfo, ReadState
from recgpt_data.sources.pyliteral import to_json


def raw_bytes(path: Path) -> bytes:
    """The decompressed bytes of a file, as far as its (possibly cut) gzip stream goes."""
    data = path.read_bytes()
    return zlib.decompressobj(wbits=31).decompress(data) if path.suffix == ".gz" else data


def complete_lines(path: Path) -> list[bytes]:
    """Every line ended by a newline (a cut file's partial last line left out)."""
    return raw_bytes(path).split(b"\n")[:-1]


def all_lines(path: Path) -> list[bytes]:
    """Every non-empty line of a whole file, the last one with or without its newline."""
    return [line for line in raw_bytes(path).split(b"\n") if line]


@functools.cache
def literal_records(path: Path) -> tuple[list[bytes], list[dict]]:
    """The complete lines of a Python-literal file and each one read with ``ast.literal_eval``."""
    lines = complete_lines(path)
    return lines, [ast.literal_eval(line.decode()) for line in lines]


def tables(out: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    def read(table: str) -> pl.DataFrame:
        files = sorted(out.glob(f"{table}/**/*.parquet"))
        return pl.concat([pl.read_parquet(f) for f in files]) if files else pl.DataFrame()

    return read("interactions"), read("items")


@pytest.fixture(scope="module")
def amazon2014(shared: Path, tmp_path_factory) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    out = tmp_path_factory.mktemp("amazon2014")
    summary = ingest("amazon2014", [shared / "amazon2014"], out)
    return *tables(out), summary.to_dict()


@pytest.fixture(scope="module")
def steam_games(shared: Path, tmp_path_factory) -> tuple[pl.DataFrame, dict, Path]:
    out = tmp_path_factory.mktemp("steam")
    summary = ingest("steam", [shared / "steam"], out)
    return tables(out)[1], summary.to_dict(), out


# --- Amazon 2014 -------------------------------------------------------------------------------


def test_amazon2014_musical_instruments_5core_has_10261_reviews(shared, amazon2014):
    interactions, _, _ = amazon2014
    path = shared / "amazon2014" / "reviews_Musical_Instruments_5.json.gz"
    records = [json.loads(line) for line in all_lines(path)]
    assert len(records) == 10_261
    got = interactions.filter(pl.col("dataset") == "amazon2014/Musical_Instruments")
    assert got.height == 10_261
    assert got.get_column("user_id").to_list() == [r["reviewerID"] for r in records]
    assert got.get_column("rating").to_list() == [r["overall"] for r in records]
    assert got.get_column("helpful_votes").to_list() == [r["helpful"][0] for r in records]
    assert [json.loads(e)["helpful_total"] for e in got.get_column("extras")] == [r["helpful"][1] for r in records]


def test_amazon2014_review_fields_map_onto_the_schema(shared, amazon2014):
    interactions, _, _ = amazon2014
    path = shared / "amazon2014" / "reviews_Musical_Instruments_5.json.gz"
    first = json.loads(all_lines(path)[0])
    row = interactions.filter(pl.col("src_file") == path.name, pl.col("src_line") == 1).row(0, named=True)
    assert row["item_id"] == first["asin"]
    assert row["review_title"] == first["summary"]
    assert row["review_text"] == first["reviewText"]
    assert row["timestamp"] == datetime.fromtimestamp(first["unixReviewTime"], UTC)
    assert row["rating_max"] == 5.0 and row["source"] == "amazon2014"


def test_amazon2014_truncated_files_keep_every_complete_record(shared, amazon2014):
    interactions, items, summary = amazon2014
    files = {Path(f["file"]).name: f for f in summary["files"]}
    reviews = files["reviews_Digital_Music_5.json.gz"]
    meta = files["meta_Digital_Music.json.gz"]
    assert len(complete_lines(shared / "amazon2014" / "reviews_Digital_Music_5.json.gz")) == 6_908
    assert len(complete_lines(shared / "amazon2014" / "meta_Digital_Music.json.gz")) == 7_419
    assert (reviews["kept"], reviews["rejected"], reviews["truncated"]) == (6_908, {"truncated_record": 1}, True)
    assert (meta["kept"], meta["rejected"], meta["truncated"]) == (7_419, {"truncated_record": 1}, True)
    assert interactions.filter(pl.col("dataset") == "amazon2014/Digital_Music").height == 6_908
    assert items.height == 7_419


def test_amazon2014_meta_matches_literal_eval_record_by_record(shared, amazon2014):
    _, items, _ = amazon2014
    _, records = literal_records(shared / "amazon2014" / "meta_Digital_Music.json.gz")
    assert items.get_column("item_id").to_list() == [r["asin"] for r in records]
    assert items.get_column("title").to_list() == [r.get("title") for r in records]
    assert items.get_column("description").to_list() == [r.get("description") for r in records]
    flattened = [list(dict.fromkeys(c for path in r.get("categories", []) for c in path)) for r in records]
    assert items.get_column("categories").to_list() == flattened
    extras = [json.loads(e) for e in items.get_column("extras")]
    assert [e.get("price") for e in extras] == [r.get("price") for r in records]
    assert [e.get("salesRank") for e in extras] == [r.get("salesRank") for r in records]


def test_amazon2014_dataset_names_and_templates():
    source = get_source("amazon2014")
    assert source.dataset(Path("reviews_Digital_Music_5.json.gz")) == "amazon2014/Digital_Music"
    assert source.dataset(Path("meta_Books.json.gz")) == "amazon2014/Books"
    assert source.template_for("amazon2014/Digital_Music").fields == ("Title", "Brand", "Review", "Rating")
    books = source.template_for("amazon2014/Books")
    assert (books.noun, books.fields) == ("books", ("Title", "Author", "Review", "Rating"))


# --- Python literals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "relative",
    ["amazon2014/meta_Digital_Music.json.gz", "steam/steam_games.json.gz", "steam/bundle_data.json.gz"],
)
def test_pyliteral_transcoding_agrees_with_literal_eval_on_every_real_line(shared, relative):
    lines, records = literal_records(shared / relative)
    assert [json.loads(to_json(line)) for line in lines] == records
    assert [json.loads(x) for x in to_json(b"\n".join(lines)).split(b"\n")] == records


@pytest.mark.parametrize(
    "literal",
    [
        "{'a': True, 'b': u'it\\'s', 'c': \"say 'hi'\", 'd': None, 'e': [1, -2.5e-3, False]}",
        "{u'x': u'caf\\xe9 \\u2014 \\U0001f3ae', 'y': '\\\\', 'z': '\\\\\\'', 'w': '\"q\"', 'v': ''}",
        "{'tab': 'a\\tb\\nc\\rd', 'f': '\\x00', 'empty': {}, 'nested': {'k': [[], [{}]]}}",
    ],
)
def test_pyliteral_transcoding_of_quotes_escapes_and_keywords(literal):
    assert json.loads(to_json(literal.encode())) == ast.literal_eval(literal)


@pytest.mark.parametrize(
    "literal",
    ["{'a': (1, 2)}", "{1: 'a'}", "{'a': 'x\\ay'}", "{'a': b'x'}", "{'a': 'x' 'y'}", "{'a': 1}u", "{'a': true}"],
)
def test_pyliteral_is_never_sure_where_json_would_differ(literal):
    transcoded = to_json(literal.encode())
    if transcoded is not None:
        with pytest.raises(ValueError):
            json.loads(transcoded)


# --- Amazon 2018 --------------------------------------------------------------------------------


def test_amazon2018_counts_and_style_object(shared, tmp_path):
    summary = ingest("amazon2018", [shared / "amazon2018"], tmp_path)
    interactions, items = tables(tmp_path)
    beauty = [json.loads(line) for line in all_lines(shared / "amazon2018" / "All_Beauty_5.json")]
    meta = all_lines(shared / "amazon2018" / "meta_Magazine_Subscriptions.json.gz")
    assert len(beauty) == 5_269 and len(meta) == 3_385
    assert interactions.filter(pl.col("dataset") == "amazon2018/All_Beauty").height == 5_269
    assert items.height == 3_385
    assert summary.rejected == {}
    got = interactions.filter(pl.col("dataset") == "amazon2018/All_Beauty").get_column("extras")
    assert [json.loads(e).get("style") for e in got] == [r.get("style") for r in beauty]


# --- Amazon 2023 (fixture) ----------------------------------------------------------------------


def test_amazon2023_fixture_reviews_and_meta(fixtures, tmp_path):
    """Fixture: tests/fixtures/amazon2023 (no real Amazon Reviews'23 sample exists)."""
    summary = ingest("amazon2023", [fixtures / "amazon2023"], tmp_path)
    interactions, items = tables(tmp_path)
    reviews = [json.loads(line) for line in all_lines(fixtures / "amazon2023" / "Video_Games.jsonl")]
    games = interactions.filter(pl.col("dataset") == "amazon2023/Video_Games")
    assert summary.rejected == {} and games.height == len(reviews) == 11
    assert games.get_column("item_id").to_list() == [r["parent_asin"] for r in reviews]
    assert [json.loads(e)["asin"] for e in games.get_column("extras")] == [r["asin"] for r in reviews]
    assert games.get_column("timestamp").to_list() == [
        datetime.fromtimestamp(r["timestamp"] / 1000, UTC) for r in reviews
    ]
    assert games.get_column("helpful_votes").to_list() == [r["helpful_vote"] for r in reviews]
    assert Counter(games.get_column("user_id")) == Counter(r["user_id"] for r in reviews)
    books = [json.loads(line) for line in all_lines(fixtures / "amazon2023" / "meta_Books.jsonl")]
    got = items.filter(pl.col("dataset") == "amazon2023/Books")
    assert got.get_column("author").to_list() == [(b.get("author") or {}).get("name") or b["store"] for b in books]
    assert get_source("amazon2023").template_for("amazon2023/Books").noun == "books"


# --- Yelp ---------------------------------------------------------------------------------------


def test_yelp_businesses_and_reviews(shared, tmp_path):
    ingest("yelp", [shared / "yelp"], tmp_path)
    interactions, items = tables(tmp_path)
    businesses = [json.loads(line) for line in all_lines(shared / "yelp" / "yelp_academic_dataset_business.json")]
    reviews = [json.loads(line) for line in all_lines(shared / "yelp" / "yelp_academic_dataset_review.json")]
    assert (len(businesses), len(reviews)) == (1_000, 999)
    assert (items.height, interactions.height) == (1_000, 999)
    assert items.get_column("title").to_list() == [b["name"] for b in businesses]
    assert items.get_column("city").to_list() == [b["city"] for b in businesses]
    assert items.get_column("categories").to_list() == [
        b["categories"].split(", ") if b["categories"] is not None else None for b in businesses
    ]
    assert interactions.get_column("timestamp").to_list() == [
        datetime.strptime(r["date"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) for r in reviews
    ]
    assert interactions.get_column("helpful_votes").to_list() == [r["useful"] for r in reviews]
    assert interactions.get_column("rating").to_list() == [r["stars"] for r in reviews]
    known = {b["business_id"] for b in businesses}
    assert (
        interactions.filter(pl.col("item_id").is_in(list(known))).height
        == sum(r["business_id"] in known for r in reviews)
        == 77
    )
    assert set(interactions.get_column("dataset")) == {"yelp"}


def test_yelp_is_declared_not_redistributable():
    source = get_source("yelp")
    assert source.redistributable is False and "not be redistributed" in source.terms
    assert (source.template.noun, source.template.fields) == ("businesses", ("Title", "City", "Review", "Rating"))


# --- Steam --------------------------------------------------------------------------------------


def test_steam_games_read_with_exact_counts(shared, steam_games):
    items, summary, _ = steam_games
    _, records = literal_records(shared / "steam" / "steam_games.json.gz")
    with_id = [r for r in records if r.get("id") is not None]
    assert (len(records), len(with_id)) == (32_135, 32_133)
    assert summary["read"] == 32_135 and summary["rejected"] == {"missing_item_id": 2}
    assert items.get_column("item_id").to_list() == [r["id"] for r in with_id]
    assert items.get_column("title").to_list() == [r.get("title", r.get("app_name")) for r in with_id]
    assert items.get_column("brand").to_list() == [r.get("developer", r.get("publisher")) for r in with_id]
    assert items.get_column("categories").to_list() == [
        list(dict.fromkeys(r.get("genres", []) + r.get("tags", []))) for r in with_id
    ]


def test_steam_bundle_file_is_listed_as_skipped(shared, steam_games):
    _, summary, _ = steam_games
    assert summary["skipped"] == [str(shared / "steam" / "bundle_data.json.gz")]


def test_steam_reviews_fixture_has_no_ratings(fixtures, tmp_path):
    """Fixture: tests/fixtures/steam (no real Steam review sample exists)."""
    summary = ingest("steam", [fixtures / "steam"], tmp_path)
    interactions, _ = tables(tmp_path)
    reviews = [ast.literal_eval(line.decode()) for line in all_lines(fixtures / "steam" / "steam_reviews.json")]
    users = [ast.literal_eval(line.decode()) for line in all_lines(fixtures / "steam" / "australian_user_reviews.json")]
    nested = [(u["user_id"], r) for u in users for r in u["reviews"]]
    assert summary.read == len(reviews) + len(nested) + 1 == 23
    assert summary.rejected == {"no_reviews": 1}
    assert interactions.height == 22 and interactions.get_column("rating").null_count() == 22
    plain = interactions.filter(pl.col("src_file") == "steam_reviews.json")
    assert plain.get_column("user_id").to_list() == [r["username"] for r in reviews]
    assert plain.get_column("review_text").to_list() == [r["text"] for r in reviews]
    assert plain.get_column("item_id").to_list() == [r["product_id"] for r in reviews]
    australian = interactions.filter(pl.col("src_file") == "australian_user_reviews.json")
    assert australian.select("user_id", "item_id").rows() == [(u, r["item_id"]) for u, r in nested]
    no_year = australian.filter(pl.col("timestamp").is_null())
    assert (
        [json.loads(e)["posted"] for e in no_year.get_column("extras")]
        == [r["posted"] for _, r in nested if not re.search(r", \d{4}\.$", r["posted"])]
        == ["Posted February 17."]
    )


def test_steam_template_has_no_rating_pairs():
    template = get_source("steam").template
    assert (template.noun, template.fields, template.rating_pairs) == ("video games", ("Title",), False)
    assert get_source("steam").rating_max is None


def test_pyliteral_ingest_is_deterministic(shared, steam_games, tmp_path):
    _, _, first = steam_games
    ingest("steam", [shared / "steam"], tmp_path)
    for path in sorted(first.glob("items/**/*.parquet")):
        assert (tmp_path / path.relative_to(first)).read_bytes() == path.read_bytes()


# --- HotelRec (fixture) -------------------------------------------------------------------------


def test_hotelrec_fixture_reviews(fixtures, tmp_path):
    """Fixture: tests/fixtures/hotelrec (the real dump is one 50 GB file)."""
    ingest("hotelrec", [fixtures / "hotelrec"], tmp_path)
    interactions, items = tables(tmp_path)
    reviews = [json.loads(line) for line in all_lines(fixtures / "hotelrec" / "HotelRec.txt")]
    assert interactions.height == len(reviews) == 10
    # The one file fills both tables: a hotel row per review, named by its URL.
    assert items.get_column("item_id").to_list() == [r["hotel_url"] for r in reviews]
    assert interactions.get_column("user_id").to_list() == [r["author"] for r in reviews]
    assert interactions.get_column("item_id").to_list() == [r["hotel_url"] for r in reviews]
    assert interactions.get_column("timestamp").to_list() == [
        datetime.fromisoformat(r["date"]).replace(tzinfo=UTC) for r in reviews
    ]
    assert [json.loads(e)["property_dict"] if e else None for e in interactions.get_column("extras")] == [
        r.get("property_dict") for r in reviews
    ]


def test_hotelrec_hotel_name_and_city_come_from_the_url(fixtures):
    """Fixture: tests/fixtures/hotelrec; the items role read through the driver's batch mapping."""
    source = get_source("hotelrec")
    path = fixtures / "hotelrec" / "HotelRec.txt"
    role = next(r for r in source.roles if r.table == "items")
    info = FileInfo(source="hotelrec", dataset="hotelrec", file=path.name)
    (batch, *_) = list(role.reader(path, ReadState()))
    rows, rejects = canonical_batch(batch, role, info, source)
    first = json.loads(all_lines(path)[0])["hotel_url"]
    assert (
        first
        == "Hotel_Review-g194823-d1517719-Reviews-Hotel_Sogni_D_Oro-Bologna_Province_of_Bologna_Emilia_Romagna.html"
    )
    assert (rows["title"][0], rows["city"][0]) == ("Hotel Sogni D Oro", "Bologna Province of Bologna Emilia Romagna")
    assert rows.height == 10 and rejects == []


# --- WikiRec (fixture) --------------------------------------------------------------------------


def test_wikirec_fixture(fixtures, tmp_path):
    """Fixture: tests/fixtures/wikirec (the format is fixed in docs/sources.md)."""
    ingest("wikirec", [fixtures / "wikirec"], tmp_path)
    interactions, items = tables(tmp_path)
    edits = [json.loads(line) for line in all_lines(fixtures / "wikirec" / "wikirec_edits.jsonl")]
    articles = [json.loads(line) for line in all_lines(fixtures / "wikirec" / "wikirec_articles.jsonl")]
    assert interactions.select("user_id", "item_id").rows() == [(e["user"], str(e["page_id"])) for e in edits]
    assert interactions.get_column("timestamp").to_list() == [datetime.fromisoformat(e["timestamp"]) for e in edits]
    assert interactions.get_column("rating").null_count() == len(edits)
    assert items.select("item_id", "title", "description").rows() == [
        (str(a["page_id"]), a["title"], a["description"]) for a in articles
    ]
    template = get_source("wikirec").template
    assert (template.noun, template.fields, template.rating_pairs) == (
        "Wikipedia articles",
        ("Title", "Description"),
        False,
    )


@pytest.mark.parametrize("name", ["amazon2023", "steam", "hotelrec", "wikirec"])
def test_fixtures_hold_whole_users_of_five_or_more_interactions(fixtures, tmp_path, name):
    """Fixtures: every user in tests/fixtures/<name> has at least 5 interactions."""
    ingest(name, [fixtures / name], tmp_path)
    interactions, _ = tables(tmp_path)
    counts = interactions.group_by("dataset", "user_id").len()
    assert counts.height >= 1 and counts.get_column("len").min() >= 5
