"""The delimited and block-format sources (MovieLens, Goodreads, BookCrossing, Anime, Netflix Prize,
Food.com) read into the canonical schema: counts are derived here with the csv module, ``json`` or
plain line splitting, never from the readers. Tests on ``tests/fixtures`` say so: those formats
have no real sample."""

from __future__ import annotations

import ast
import csv
import gzip
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from recgpt_data.errors import UsageError
from recgpt_data.ingest import ingest
from recgpt_data.pipeline.spec import DEMO_DIR
from recgpt_data.sources import get_source
from recgpt_data.sources.base import LINE, ReadState
from recgpt_data.sources.delimited import LATIN1, Dialect, delimited
from recgpt_data.sources.foodcom import INTERACTIONS as FOODCOM_INTERACTIONS


def run(format: str, paths: list[Path], out: Path):
    """Ingest and return the summary, the interactions in (src_file, src_line) order and the items
    in file order."""
    summary = ingest(format, paths, out)
    tables = {}
    for table in ("interactions", "items"):
        files = sorted(out.glob(f"{table}/**/*.parquet"))
        tables[table] = pl.concat([pl.read_parquet(f) for f in files]) if files else None
    if tables["interactions"] is not None:
        tables["interactions"] = tables["interactions"].sort("src_file", "src_line")
    return summary, tables["interactions"], tables["items"]


def csv_rows(path: Path, encoding: str = "utf-8", delimiter: str = ",") -> list[list[str]]:
    with open(path, newline="", encoding=encoding) as handle:
        return list(csv.reader(handle, delimiter=delimiter))[1:]


def rejects(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]


# MovieLens


def test_ml100k_reads_every_rating_of_u_data(shared, tmp_path):
    lines = (shared / "movielens/ml-100k/u.data").read_text().splitlines()
    summary, inter, _ = run("movielens", [shared / "movielens/ml-100k"], tmp_path)
    assert inter.height == len(lines) == 100_000
    assert summary.rejected == {}
    assert inter["src_line"].to_list() == list(range(1, len(lines) + 1))
    user, item, rating, ts = lines[0].split("\t")
    first = inter.row(0, named=True)
    assert (first["user_id"], first["item_id"], first["rating"]) == (user, item, float(rating))
    assert first["timestamp"] == datetime.fromtimestamp(int(ts), UTC)
    assert inter["rating"].sum() == sum(int(line.split("\t")[2]) for line in lines)
    assert set(inter["dataset"]) == {"movielens/ml-100k"} and set(inter["rating_max"]) == {5.0}


def test_ml100k_u_item_is_latin1_with_genres_from_flags(shared, tmp_path):
    genre_names = [line.split("|")[0] for line in (shared / "movielens/ml-100k/u.genre").read_text().split()]
    rows = [
        line.split("|") for line in (shared / "movielens/ml-100k/u.item").read_bytes().decode("latin-1").splitlines()
    ]
    _, _, items = run("movielens", [shared / "movielens/ml-100k"], tmp_path)
    assert items.height == len(rows) == 1682
    assert items["title"].to_list() == [row[1] for row in rows]
    expected = [[g for g, flag in zip(genre_names, row[5:]) if flag == "1" and g != "unknown"] for row in rows]
    assert items["categories"].to_list() == expected
    assert any(not title.isascii() for title in items["title"])


def test_ml_latest_small_csv(shared, tmp_path):
    ratings = csv_rows(shared / "movielens/ml-latest-small/ratings.csv")
    movies = csv_rows(shared / "movielens/ml-latest-small/movies.csv")
    summary, inter, items = run("movielens", [shared / "movielens/ml-latest-small"], tmp_path)
    assert (inter.height, items.height) == (len(ratings), len(movies)) == (100_004, 9_125)
    assert summary.rejected == {}
    assert inter["rating"].to_list() == [float(r[2]) for r in ratings]
    assert items["title"].to_list() == [m[1] for m in movies]
    no_genres = [m[0] for m in movies if m[2] == "(no genres listed)"]
    assert no_genres and items.filter(pl.col("item_id").is_in(no_genres))["categories"].list.len().max() == 0
    assert any("," in m[1] for m in movies)


def test_ml1m_movies_dat_reads_utf8_and_latin1(shared, tmp_path):
    raw = (shared / "movielens/ml-1m/movies.dat").read_bytes()
    # This copy was re-encoded to UTF-8 and lost its accents (U+FFFD); put one back as GroupLens
    # ships the file, in ISO-8859-1.
    latin_raw = raw.decode("utf-8").replace("\ufffd", "é").encode("latin-1")
    rows = [line.split("::") for line in raw.decode("utf-8").splitlines()]
    latin_rows = [line.split("::") for line in latin_raw.decode("latin-1").splitlines()]
    (tmp_path / "ml-1m").mkdir()
    (tmp_path / "ml-1m/movies.dat").write_bytes(latin_raw)
    _, _, utf8_items = run("movielens", [shared / "movielens/ml-1m/movies.dat"], tmp_path / "a")
    _, _, latin_items = run("movielens", [tmp_path / "ml-1m/movies.dat"], tmp_path / "b")
    assert utf8_items.height == latin_items.height == len(rows) == 3883
    assert utf8_items["title"].to_list() == [r[1] for r in rows]
    assert latin_items["title"].to_list() == [r[1] for r in latin_rows]
    assert sum(not r[1].isascii() for r in latin_rows) > 0
    assert utf8_items["categories"].to_list() == [r[2].split("|") for r in rows]


def test_ml1m_ratings_dat_fixture(fixtures, tmp_path):
    """Fixture: ml-1m ratings are not redistributable and not in the samples; invented values."""
    lines = (fixtures / "movielens/ml-1m/ratings.dat").read_text().splitlines()
    _, inter, _ = run("movielens", [fixtures / "movielens/ml-1m"], tmp_path)
    assert inter.height == len(lines)
    assert inter["user_id"].to_list() == [line.split("::")[0] for line in lines]
    assert set(inter["dataset"]) == {"movielens/ml-1m"}


def test_bundled_demo_movielens_ingests(tmp_path):
    folder = DEMO_DIR / "movielens/ml-latest-small"
    summary, inter, items = run("movielens", [folder], tmp_path)
    assert inter.height == len(csv_rows(folder / "ratings.csv")) == 790
    assert items.height == len(csv_rows(folder / "movies.csv")) == 547
    assert summary.rejected == {}


def test_movielens_redistribution_terms_per_release():
    source = get_source("movielens")
    assert source.may_redistribute("movielens/ml-latest-small")
    assert not any(
        source.may_redistribute(f"movielens/{r}") for r in ("ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m")
    )


# Goodreads


def test_goodbooks_books_csv(shared, tmp_path):
    rows = csv_rows(shared / "goodreads_goodbooks10k/books.csv")
    summary, _, items = run("goodreads", [shared / "goodreads_goodbooks10k/books.csv"], tmp_path)
    assert summary.rejected == {}
    assert items.height == len(rows) == 10_000
    assert items["item_id"].to_list() == [r[0] for r in rows]
    assert items["title"].to_list() == [r[10] for r in rows]
    assert items["author"].to_list() == [r[7] for r in rows]
    assert set(items["dataset"]) == {"goodreads/goodbooks-10k"}
    assert json.loads(items["extras"][0])["goodreads_book_id"] == rows[0][1]


def test_goodbooks_ratings_and_to_read_fixture(fixtures, tmp_path):
    """Fixture: goodbooks-10k ratings.csv / to_read.csv, written by hand in that format."""
    folder = fixtures / "goodreads/goodbooks-10k"
    _, inter, _ = run("goodreads", [folder], tmp_path)
    ratings = inter.filter(pl.col("src_file") == "ratings.csv")
    to_read = inter.filter(pl.col("src_file") == "to_read.csv")
    assert ratings["rating"].to_list() == [float(r[2]) for r in csv_rows(folder / "ratings.csv")]
    assert to_read.height == len(csv_rows(folder / "to_read.csv")) and to_read["rating"].null_count() == to_read.height
    assert inter["timestamp"].null_count() == inter.height


def test_goodreads_reviews_zero_rating_is_null_and_dates_are_utc(fixtures, tmp_path):
    """Fixture: UCSD Book Graph reviews, written by hand in the published format."""
    path = fixtures / "goodreads/goodreads_reviews_poetry.json"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    _, inter, _ = run("goodreads", [path], tmp_path)
    assert inter.height == len(records)
    assert inter["rating"].to_list() == [r["rating"] or None for r in records]
    expected = [datetime.strptime(r["date_added"], "%a %b %d %H:%M:%S %z %Y").astimezone(UTC) for r in records]
    assert inter["timestamp"].to_list() == expected
    assert inter["helpful_votes"].to_list() == [r["n_votes"] for r in records]
    assert inter["review_text"].to_list() == [r["review_text"] or None for r in records]
    assert set(inter["dataset"]) == {"goodreads"}


def test_goodreads_interactions_shelvings(fixtures, tmp_path):
    """Fixture: UCSD Book Graph interactions, written by hand in the published format."""
    path = fixtures / "goodreads/goodreads_interactions_poetry.json"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    _, inter, _ = run("goodreads", [path], tmp_path)
    assert inter["rating"].to_list() == [r["rating"] or None for r in records]
    assert [json.loads(e)["is_read"] for e in inter["extras"]] == [r["is_read"] for r in records]


def test_goodreads_books_resolve_authors_and_genres_from_side_files(fixtures, tmp_path):
    """Fixture: UCSD books, authors and genres files, written by hand in the published format."""
    folder = fixtures / "goodreads"
    names = {
        a["author_id"]: a["name"]
        for a in map(json.loads, (folder / "goodreads_book_authors.json").read_text().splitlines())
    }
    genres = {
        g["book_id"]: g["genres"]
        for g in map(json.loads, (folder / "goodreads_book_genres_initial.json").read_text().splitlines())
    }
    books = [json.loads(line) for line in (folder / "goodreads_books_poetry.json").read_text().splitlines()]
    summary, _, items = run("goodreads", [folder], tmp_path)
    expected_authors = []
    for book in books:
        known = [(names[a["author_id"]], a["role"]) for a in book["authors"] if a["author_id"] in names]
        writers = [n for n, role in known if role == ""] or [n for n, _ in known]
        expected_authors.append(", ".join(writers) or None)
    assert (
        items["author"].to_list()
        == expected_authors
        == ["Ada Verse", "Chloé Traduit, Dan Drawer", "Eve Stone, Finn Leaf", None]
    )
    got = dict(zip(items["item_id"], items["categories"]))
    assert {b: sorted(g) for b, g in genres.items()} == {b: sorted(got[b]) for b in genres}
    assert got["30119"] is None
    skipped = {Path(p).name for p in summary.skipped if p.endswith(".json")}
    assert skipped == {"goodreads_book_authors.json", "goodreads_book_genres_initial.json"}


def test_goodreads_unreadable_side_file_lines_are_reported(fixtures, tmp_path):
    """Fixture: the UCSD books and authors files, with one broken authors line appended."""
    folder = tmp_path / "goodreads"
    folder.mkdir()
    shutil.copy(fixtures / "goodreads/goodreads_books_poetry.json", folder)
    authors = (fixtures / "goodreads/goodreads_book_authors.json").read_text()
    (folder / "goodreads_book_authors.json").write_text(authors + '{"author_id": "1007", "name": \n')
    summary, _, items = run("goodreads", [folder], tmp_path / "out")
    assert summary.warnings == ["goodreads_book_authors.json: 1 unreadable line(s) left out of the join"]
    assert items["author"][0] == "Ada Verse" and items["categories"].null_count() == items.height


# BookCrossing


def test_bookcrossing_ratings_zero_is_implicit(fixtures, tmp_path):
    """Fixture: BX-Book-Ratings.csv, written by hand in the dump's format (ISO-8859-1, CRLF, all quoted)."""
    path = fixtures / "bookcrossing/BX-Book-Ratings.csv"
    rows = csv_rows(path, "latin-1", ";")
    _, inter, _ = run("bookcrossing", [path], tmp_path)
    assert inter.height == len(rows)
    assert inter["rating"].to_list() == [float(r[2]) if r[2] != "0" else None for r in rows]
    assert inter["timestamp"].null_count() == inter.height and set(inter["rating_max"]) == {10.0}


def test_bookcrossing_books_keep_unescaped_quotes_and_entities(fixtures, tmp_path):
    """Fixture: BX-Books.csv, written by hand with the dump's known quirks."""
    path = fixtures / "bookcrossing/BX-Books.csv"
    lines = path.read_bytes().decode("latin-1").split("\r\n")[1:-1]
    summary, _, items = run("bookcrossing", [path], tmp_path)
    assert items.height == len(lines) and summary.rejected == {}
    titles = dict(zip(items["item_id"], items["title"]))
    assert titles["0553280333"] == 'The "Little" Book of Café Stories'
    assert titles["0373825536"] == "Mrs. Pollifax &amp; the Hong Kong Buddha"
    assert items.filter(pl.col("item_id") == "0553280333")["author"].item() == "Zoë Müller"


def test_bx_users_real_file_reads_with_null_ages_and_is_skipped_by_ingest(shared, tmp_path):
    path = shared / "bookcrossing/BX-Users.csv"
    lines = path.read_bytes().decode("latin-1").split("\r\n")[1:-1]
    reader = delimited(
        Dialect(separator=";", quoting=False, all_quoted=True, encoding=LATIN1, required=("User-ID", "Age"))
    )
    state = ReadState()
    frame = pl.concat([b.frame for b in reader(path, state) if b.frame.height])
    assert state.records == frame.height == len(lines) == 22_816
    assert frame["Age"].to_list().count("NULL") == sum(line.endswith(";NULL") for line in lines)
    assert frame["User-ID"].to_list() == [line.split(";")[0].strip('"') for line in lines]
    shutil.copy(path, tmp_path / "BX-Users.csv")
    shutil.copy(Path(__file__).parent / "fixtures/bookcrossing/BX-Books.csv", tmp_path / "BX-Books.csv")
    summary = ingest("bookcrossing", [tmp_path], tmp_path / "out")
    assert [Path(p).name for p in summary.skipped] == ["BX-Users.csv"]


# Anime


def test_anime_csv_real(shared, tmp_path):
    rows = csv_rows(shared / "anime/anime.csv")
    summary, _, items = run("anime", [shared / "anime/anime.csv"], tmp_path)
    assert items.height == len(rows) == 12_294 and summary.rejected == {}
    assert items["title"].to_list() == [r[1] for r in rows]
    assert "Gintama&#039;" in items["title"].to_list()
    assert items["categories"].to_list() == [[g.strip() for g in r[2].split(",")] if r[2] else None for r in rows]


def test_anime_rating_minus_one_is_null(fixtures, tmp_path):
    """Fixture: rating.csv, written by hand in the Kaggle format (no sample under 4 MiB exists)."""
    rows = csv_rows(fixtures / "anime/rating.csv")
    _, inter, _ = run("anime", [fixtures / "anime/rating.csv"], tmp_path)
    assert inter["rating"].to_list() == [None if r[2] == "-1" else float(r[2]) for r in rows]
    assert inter["rating"].null_count() == sum(r[2] == "-1" for r in rows) > 0


# Netflix Prize


def test_netflix_combined_data_blocks(fixtures, tmp_path):
    """Fixture: combined_data_1.txt and training_set/mv_0000003.txt, invented rows in the Prize's format."""
    expected = []
    for path in (fixtures / "netflix/combined_data_1.txt", fixtures / "netflix/training_set/mv_0000003.txt"):
        movie = None
        for line in path.read_text().splitlines():
            if line.endswith(":"):
                movie = line[:-1]
            else:
                customer, rating, date = line.split(",")
                expected.append(
                    (path.name, customer, movie, float(rating), datetime.fromisoformat(date).replace(tzinfo=UTC))
                )
    _, inter, _ = run("netflix", [fixtures / "netflix"], tmp_path)
    got = inter.select("src_file", "user_id", "item_id", "rating", "timestamp").rows()
    assert got == expected
    assert inter.filter(pl.col("src_file") == "combined_data_1.txt")["src_line"].to_list() == list(range(1, 13))


def test_netflix_movie_titles_split_on_first_two_commas(shared, tmp_path):
    lines = (shared / "netflix/movie_titles.txt").read_bytes().decode("latin-1").splitlines()
    summary, _, items = run("netflix", [shared / "netflix/movie_titles.txt"], tmp_path)
    assert items.height == len(lines) == 17_770 and summary.rejected == {}
    assert items["title"].to_list() == [line.split(",", 2)[2] for line in lines]
    years = [json.loads(e)["year"] for e in items["extras"]]
    assert years == [None if line.split(",")[1] == "NULL" else line.split(",")[1] for line in lines]
    assert "Smokey Joe's Café" in items["title"].to_list()


# Food.com


def test_foodcom_interactions_real(shared, tmp_path):
    path = shared / "foodcom/RAW_interactions.csv"
    rows = csv_rows(path)
    summary, inter, _ = run("foodcom", [path], tmp_path)
    assert inter.height == len(rows) == 13_247 and summary.rejected == {}
    assert inter["src_line"].to_list() == list(range(1, len(rows) + 1))
    assert inter["review_text"].to_list() == [r[4].replace("\r\n", "\n") or None for r in rows]
    assert inter["rating"].to_list() == [None if r[3] == "0" else float(r[3]) for r in rows]
    assert inter["timestamp"].to_list() == [datetime.strptime(r[2], "%Y/%m/%d").replace(tzinfo=UTC) for r in rows]
    assert sum("\n" in r[4] for r in rows) > 0


def test_foodcom_quoted_records_span_input_chunks(shared, tmp_path):
    path = shared / "foodcom/RAW_interactions.csv"
    whole = pl.concat([b.frame for b in delimited(FOODCOM_INTERACTIONS)(path, ReadState())])
    state = ReadState()
    pieces = pl.concat(
        [b.frame for b in delimited(FOODCOM_INTERACTIONS, chunk_bytes=8192)(path, state) if b.frame.height]
    )
    assert state.records == len(csv_rows(path))
    assert pieces.equals(whole)


def test_a_record_open_at_a_chunk_end_continues_in_the_next(tmp_path):
    path = tmp_path / "RAW_interactions.csv"
    path.write_text(
        'user_id,recipe_id,date,rating,review\n1,2,2010-01-01,5,"one\ntwo\nthree\nfour"\n1,3,2010-01-02,4,x\n'
    )
    state = ReadState()
    frame = pl.concat([b.frame for b in delimited(FOODCOM_INTERACTIONS, chunk_bytes=8)(path, state) if b.frame.height])
    assert frame["review"].to_list() == ["one\ntwo\nthree\nfour", "x"]
    assert frame[LINE].to_list() == [1, 2] and state.records == 2


def test_an_unpaired_quote_does_not_swallow_the_rest_of_the_file(tmp_path):
    path = tmp_path / "RAW_interactions.csv"
    rows = [f"1,{i},2010-01-01,5,fine" for i in range(40)]
    rows[3] = '1,3,2010-01-01,5,a stray " inside'
    path.write_text("user_id,recipe_id,date,rating,review\n" + "\n".join(rows) + "\n")
    state = ReadState()
    batches = list(delimited(FOODCOM_INTERACTIONS, chunk_bytes=64, max_open=200)(path, state))
    frame = pl.concat([b.frame for b in batches if b.frame.height])
    assert frame[LINE].to_list() == list(range(1, 41)) and state.records == 40
    assert frame["review"][3] == 'a stray " inside'


def test_lines_joined_by_two_unpaired_quotes_are_taken_apart_again(tmp_path):
    """Two stray quotes pair up across lines; the joined lines do not parse as one record, so each
    line is read on its own (a quote inside an unquoted field is text, as the csv module reads it)."""
    path = tmp_path / "RAW_interactions.csv"
    rows = [f"1,{i},2010-01-01,5,fine" for i in range(8)]
    rows[3], rows[5] = '1,3,2010-01-01,5,a " here', '1,5,2010-01-01,5,and " there'
    path.write_text("user_id,recipe_id,date,rating,review\n" + "\n".join(rows) + "\n")
    summary, inter, _ = run("foodcom", [path], tmp_path / "out")
    assert inter["item_id"].to_list() == [str(i) for i in range(8)]
    assert inter["review_text"].to_list()[3:6] == ['a " here', "fine", 'and " there']
    assert inter["src_line"].to_list() == list(range(1, 9))
    assert rejects(tmp_path / "out") == []
    assert summary.read == 8


def test_a_quote_open_at_the_end_of_the_file_loses_only_its_own_line(tmp_path):
    path = tmp_path / "RAW_interactions.csv"
    rows = [f"1,{i},2010-01-01,5,fine" for i in range(100)]
    rows[0] = '1,0,2010-01-01,5,"never closed'
    path.write_text("user_id,recipe_id,date,rating,review\n" + "\n".join(rows) + "\n")
    summary, inter, _ = run("foodcom", [path], tmp_path / "out")
    assert inter["item_id"].to_list() == [str(i) for i in range(1, 100)]
    assert [(r["line"], r["reason"], r["raw"]) for r in rejects(tmp_path / "out")] == [
        (1, "unterminated_quote", rows[0])
    ]
    assert summary.read == 100


def test_quoted_newlines_next_to_control_bytes(tmp_path):
    path = tmp_path / "RAW_interactions.csv"
    path.write_text('user_id,recipe_id,date,rating,review\n1,2,2010-01-01,5,"a\x1d\nb"\n1,3,2010-01-02,4,"c\nd"\n')
    frame = pl.concat([b.frame for b in delimited(FOODCOM_INTERACTIONS)(path, ReadState())])
    assert frame["review"].to_list() == ["a\x1d\nb", "c\nd"]


def test_foodcom_both_date_forms(tmp_path):
    path = tmp_path / "RAW_interactions.csv"
    path.write_text(
        'user_id,recipe_id,date,rating,review\n1,10,2003-02-13,4,"ok"\n1,11,2003/2/14,0,fine\n1,12,13/02/2003,5,x\n'
    )
    summary, inter, _ = run("foodcom", [path], tmp_path / "out")
    assert inter["timestamp"].to_list() == [datetime(2003, 2, 13, tzinfo=UTC), datetime(2003, 2, 14, tzinfo=UTC)]
    assert inter["rating"].to_list() == [4.0, None]
    assert summary.rejected == {"missing_timestamp": 1}


def test_foodcom_recipes_fixture(fixtures, shared, tmp_path):
    """Fixture: RAW_recipes.csv for the recipes of three real users of the interactions sample;
    the recipe ids are real, the names and texts invented (the sample has no recipes file)."""
    path = fixtures / "foodcom/RAW_recipes.csv"
    rows = csv_rows(path)
    _, _, items = run("foodcom", [path], tmp_path)
    assert items["item_id"].to_list() == [r[1] for r in rows]
    assert items["title"].to_list() == [r[0] for r in rows]
    assert items["categories"].to_list() == [ast.literal_eval(r[5]) for r in rows]
    assert items["description"].to_list() == [r[9].replace("\r\n", "\n") or None for r in rows]
    users = {"1058097", "125356", "1625919"}
    touched = {r[1] for r in csv_rows(shared / "foodcom/RAW_interactions.csv") if r[0] in users}
    assert set(items["item_id"]) == touched


# Bad input


def test_malformed_csv_rows_are_rejected_with_reasons(tmp_path):
    folder = tmp_path / "ml-latest"
    folder.mkdir()
    (folder / "ratings.csv").write_text(
        'userId,movieId,rating,timestamp\n1,10,4.0,1000000000\n1,11,4.0\n\n1,"12,3.5,1000000001\n'
    )
    (folder / "movies.csv").write_text(
        'movieId,title,genres\n10,"A ""quoted"" title",Drama\n11,"Bad"x,Drama\n12,Fine,\n'
    )
    summary, inter, items = run("movielens", [folder], tmp_path / "out")
    assert inter["src_line"].to_list() == [1]
    assert items["item_id"].to_list() == ["10", "12"]
    assert items["title"].to_list() == ['A "quoted" title', "Fine"]
    got = sorted((Path(r["file"]).name, r["line"], r["reason"]) for r in rejects(tmp_path / "out"))
    assert got == [
        ("movies.csv", 2, "malformed_csv"),
        ("ratings.csv", 2, "wrong_field_count"),
        ("ratings.csv", 3, "blank_line"),
        ("ratings.csv", 4, "unterminated_quote"),
    ]
    assert summary.read == summary.kept + sum(summary.rejected.values()) == 7


def test_bad_values_and_encodings_are_rejected(tmp_path):
    path = tmp_path / "RAW_interactions.csv"
    path.write_bytes(
        b"user_id,recipe_id,date,rating,review\n1,2,2010-01-01,five,x\n1,3,2010-01-02,5,caf\xe9\n1,4,2010-01-03,5,ok\n"
    )
    summary, inter, _ = run("foodcom", [path], tmp_path / "out")
    assert inter["item_id"].to_list() == ["4"]
    assert summary.rejected == {"bad_rating": 1, "invalid_utf8": 1}
    raw = {r["reason"]: r["raw"] for r in rejects(tmp_path / "out")}
    assert raw["bad_rating"] == "1,2,2010-01-01,five,x"


def test_netflix_bad_rows(tmp_path):
    path = tmp_path / "combined_data_9.txt"
    path.write_text("7,3,2005-01-01\n1:\n5,3,2005-01-01\n6,3\n8,4,2005-02-30\n2:\n5,x,2005-01-02\n")
    summary, inter, _ = run("netflix", [path], tmp_path / "out")
    assert inter.select("user_id", "item_id").rows() == [("5", "1")]
    assert summary.rejected == {"bad_rating": 1, "missing_timestamp": 1, "no_block_header": 1, "wrong_field_count": 1}
    assert sorted((r["line"], r["reason"]) for r in rejects(tmp_path / "out")) == [
        (1, "no_block_header"),
        (3, "wrong_field_count"),
        (4, "missing_timestamp"),
        (5, "bad_rating"),
    ]


def test_truncated_gzip_keeps_complete_records(shared, tmp_path):
    data = gzip.compress((shared / "foodcom/RAW_interactions.csv").read_bytes(), mtime=0)
    path = tmp_path / "RAW_interactions.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    summary, inter, _ = run("foodcom", [path], tmp_path / "out")
    assert summary.files[0].truncated and "kept the records before the cut" in summary.warnings[0]
    assert summary.rejected == {"truncated_record": 1}
    rows = csv_rows(shared / "foodcom/RAW_interactions.csv")
    assert 0 < inter.height < len(rows)
    assert inter["review_text"].to_list() == [r[4].replace("\r\n", "\n") or None for r in rows[: inter.height]]


def test_missing_header_column_is_a_clear_error(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("user,movie,score\n1,2,3\n")
    with pytest.raises(UsageError, match="header lacks column"):
        ingest("movielens", [path], tmp_path / "out")
