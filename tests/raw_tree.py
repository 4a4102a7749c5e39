"""A miniature raw tree for ``pipelines/recgpt.toml``: every source's folder laid out as its owners
publish it, filled at test time with slices of the real samples in ../shared/data and the
hand-written fixtures in tests/fixtures (nothing here is copied into the repository; Netflix and
MovieLens terms forbid that).

Where no real sample of a file the spec names exists, real rows of another file in the same format
stand in for it, and the slice is chosen so that the P5 benchmarks the spec builds have a 5-core:

- ``amazon2014/reviews_Beauty_5.json.gz``: the real 2018 ``All_Beauty_5.json`` reviews of its three
  most reviewed items (their 5-core), written in the 2014 fields (the same reviews the 2018 folder holds: the
  cross-release copies); ``meta_Beauty.json.gz`` and ``meta_Sports_and_Outdoors.json.gz`` are empty
  (no 2014 Beauty or Musical Instruments metadata sample exists).
- ``amazon2014/reviews_Sports_and_Outdoors_5.json.gz``: the real 2014 Musical Instruments 5-core
  reviews of its 30 most reviewed items (their 5-core), line for line.
- ``amazon2014/reviews_Toys_and_Games_5.json.gz`` / ``meta_Toys_and_Games.json.gz``: the real 2014
  Digital Music reviews of its 15 most reviewed items (their 5-core) and those items' metadata
  lines, line for line.
- ``yelp``: the first 20 real businesses and their reviews, then the real MovieLens 100K ratings of
  its 12 most rated movies by the 30 users who rated most of them, as Yelp reviews of those movies
  as businesses (the Yelp sample has no user with five reviews, so no Yelp benchmark without them).
- ``movielens/ml-25m``: the real ml-latest-small ratings of its first 8 users and their movies.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import shutil
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

FORMATS = {  # the source formats pipelines/recgpt.toml reads, each with its folder in the tree
    "amazon2014",
    "amazon2018",
    "amazon2023",
    "yelp",
    "movielens",
    "goodreads",
    "steam",
    "bookcrossing",
    "anime",
    "netflix",
    "foodcom",
    "hotelrec",
    "wikirec",
}
BEAUTY_ITEMS = 3
SPORTS_ITEMS = 30
TOYS_ITEMS = 15
YELP_BUSINESSES = 20
YELP_MOVIES, YELP_USERS = 12, 30
MOVIELENS_USERS = 8
FIELDS_2014 = ("reviewerID", "asin", "reviewerName", "reviewText", "overall", "summary", "unixReviewTime", "reviewTime")


def gzip_lines(lines: Iterable[str], path: Path) -> None:
    """Write ``lines`` (each ending in a newline) as a gzip file, as the owners ship them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.writelines(lines)


def complete_lines(path: Path) -> list[str]:
    """The complete lines of a (possibly truncated) gzip file."""
    lines: list[str] = []
    with gzip.open(path, "rt", encoding="utf-8") as handle, contextlib.suppress(EOFError):
        for line in handle:  # a truncated sample ends in EOFError: keep what was read
            lines.append(line)
    return [line for line in lines if line.endswith("\n")]


def most_reviewed(lines: list[str], items: int) -> list[str]:
    """The 5-core (users and items with 5 reviews or more, repeated until it holds) of the review
    lines (JSON objects) of the ``items`` most reviewed items, in file order."""
    counts = Counter(json.loads(line)["asin"] for line in lines)
    top = {item for item, _ in counts.most_common(items)}
    kept = [(line, json.loads(line)) for line in lines if json.loads(line)["asin"] in top]
    while True:
        users = Counter(r["reviewerID"] for _, r in kept)
        asins = Counter(r["asin"] for _, r in kept)
        core = [(line, r) for line, r in kept if users[r["reviewerID"]] >= 5 and asins[r["asin"]] >= 5]
        if len(core) == len(kept):
            return [line for line, _ in core]
        kept = core


def amazon(shared: Path, raw: Path) -> None:
    """The 2018 and 2014 Amazon folders."""
    beauty = most_reviewed((shared / "amazon2018" / "All_Beauty_5.json").read_text().splitlines(True), BEAUTY_ITEMS)
    gzip_lines(beauty, raw / "amazon2018" / "All_Beauty.json.gz")
    magazine = (shared / "amazon2018" / "Magazine_Subscriptions_5.json").read_text().splitlines(True)[:60]
    gzip_lines(magazine, raw / "amazon2018" / "Magazine_Subscriptions.json.gz")
    asins = {json.loads(line)["asin"] for line in magazine}
    meta = complete_lines(shared / "amazon2018" / "meta_Magazine_Subscriptions.json.gz")
    gzip_lines(
        [m for m in meta if json.loads(m)["asin"] in asins], raw / "amazon2018" / "meta_Magazine_Subscriptions.json.gz"
    )

    old = raw / "amazon2014"
    as_2014 = [
        json.dumps({k: json.loads(line)[k] for k in FIELDS_2014 if k in json.loads(line)}) + "\n" for line in beauty
    ]
    gzip_lines(as_2014, old / "reviews_Beauty_5.json.gz")
    gzip_lines([], old / "meta_Beauty.json.gz")
    sports = most_reviewed(
        complete_lines(shared / "amazon2014" / "reviews_Musical_Instruments_5.json.gz"), SPORTS_ITEMS
    )
    gzip_lines(sports, old / "reviews_Sports_and_Outdoors_5.json.gz")
    gzip_lines([], old / "meta_Sports_and_Outdoors.json.gz")
    toys = most_reviewed(complete_lines(shared / "amazon2014" / "reviews_Digital_Music_5.json.gz"), TOYS_ITEMS)
    gzip_lines(toys, old / "reviews_Toys_and_Games_5.json.gz")
    toy_asins = {json.loads(line)["asin"] for line in toys}
    toy_meta = [
        m for m in complete_lines(shared / "amazon2014" / "meta_Digital_Music.json.gz") if meta_asin(m) in toy_asins
    ]
    gzip_lines(toy_meta, old / "meta_Toys_and_Games.json.gz")


def meta_asin(line: str) -> str:
    """The ASIN of a 2014 metadata line (a Python literal that opens with its ``'asin'`` key)."""
    start = line.index("'asin': '") + len("'asin': '")
    return line[start : line.index("'", start)]


def yelp(shared: Path, raw: Path) -> None:
    """Real Yelp businesses and reviews, then MovieLens 100K ratings as Yelp reviews (see above)."""
    folder = raw / "yelp"
    folder.mkdir(parents=True)
    businesses = (shared / "yelp" / "yelp_academic_dataset_business.json").read_text().splitlines()[:YELP_BUSINESSES]
    ids = {json.loads(line)["business_id"] for line in businesses}
    reviews = [
        line
        for line in (shared / "yelp" / "yelp_academic_dataset_review.json").read_text().splitlines()
        if json.loads(line)["business_id"] in ids
    ]
    ratings = [line.split("\t") for line in (shared / "movielens" / "ml-100k" / "u.data").read_text().splitlines()]
    movies = {m for m, _ in Counter(r[1] for r in ratings).most_common(YELP_MOVIES)}
    users = {u for u, _ in Counter(r[0] for r in ratings if r[1] in movies).most_common(YELP_USERS)}
    titles = {}
    for line in (shared / "movielens" / "ml-100k" / "u.item").read_bytes().decode("latin-1").splitlines():
        movie, title, *_ = line.split("|")
        titles[movie] = title
    for movie in sorted(movies, key=int):
        businesses.append(
            json.dumps({"business_id": yelp_id("movie", movie), "name": titles[movie], "city": "Minneapolis"})
        )
    for user, movie, stars, stamp in ratings:
        if user in users and movie in movies:
            date = datetime.fromtimestamp(int(stamp), UTC).strftime("%Y-%m-%d %H:%M:%S")
            reviews.append(
                json.dumps(
                    {
                        "user_id": yelp_id("user", user),
                        "business_id": yelp_id("movie", movie),
                        "stars": float(stars),
                        "date": date,
                        "text": "",
                    }
                )
            )
    (folder / "yelp_academic_dataset_business.json").write_text("\n".join(businesses) + "\n")
    (folder / "yelp_academic_dataset_review.json").write_text("\n".join(reviews) + "\n")


def yelp_id(kind: str, number: str) -> str:
    """A MovieLens id in Yelp's id form (22 URL-safe base64 characters): ``ml100k-movie0000000042``."""
    return f"ml100k-{kind:<5}".replace(" ", "_") + number.zfill(22 - 12)


def movielens(shared: Path, raw: Path) -> None:
    """ml-latest-small's first users, under the ml-25m folder the spec reads (same CSV format)."""
    source = shared / "movielens" / "ml-latest-small"
    folder = raw / "movielens" / "ml-25m"
    folder.mkdir(parents=True)
    header, *lines = (source / "ratings.csv").read_text().splitlines(True)
    users = sorted({line.split(",")[0] for line in lines}, key=int)[:MOVIELENS_USERS]
    kept = [line for line in lines if line.split(",")[0] in set(users)]
    (folder / "ratings.csv").write_text(header + "".join(kept))
    movies = {line.split(",")[1] for line in kept}
    rows = list(csv.reader(io.StringIO((source / "movies.csv").read_text())))
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([rows[0], *[r for r in rows[1:] if r[0] in movies]])
    (folder / "movies.csv").write_text(out.getvalue())


def fixtures_and_side_files(shared: Path, fixtures: Path, raw: Path) -> None:
    """The sources with no real interaction sample: the hand-written fixtures, with the real side
    files (titles, games, users) cut to the ids the fixtures name."""
    reviews = fixtures / "amazon2023"
    for name in ("Books", "Video_Games"):
        copy(reviews / f"{name}.jsonl", raw / "amazon2023" / "raw" / "review_categories" / f"{name}.jsonl")
        copy(reviews / f"meta_{name}.jsonl", raw / "amazon2023" / "raw" / "meta_categories" / f"meta_{name}.jsonl")
    for name in ("reviews", "interactions", "books"):
        gzip_file(fixtures / "goodreads" / f"goodreads_{name}_poetry.json", raw / "goodreads")
    for name in ("goodreads_book_authors.json", "goodreads_book_genres_initial.json"):
        gzip_file(fixtures / "goodreads" / name, raw / "goodreads")
    for name in ("steam_reviews.json", "australian_user_reviews.json"):
        gzip_file(fixtures / "steam" / name, raw / "steam")
    steam_ids = steam_products(fixtures / "steam")
    games = complete_lines(shared / "steam" / "steam_games.json.gz")
    gzip_lines(
        [g for g in games if any(f"'id': u'{i}'" in g or f"'id': '{i}'" in g for i in steam_ids)],
        raw / "steam" / "steam_games.json.gz",
    )
    for name in ("BX-Book-Ratings.csv", "BX-Books.csv"):
        copy(fixtures / "bookcrossing" / name, raw / "bookcrossing" / name)
    copy_head(shared / "bookcrossing" / "BX-Users.csv", raw / "bookcrossing" / "BX-Users.csv", 50)
    copy(fixtures / "anime" / "rating.csv", raw / "anime" / "rating.csv")
    anime_ids = {line.split(",")[1] for line in (fixtures / "anime" / "rating.csv").read_text().splitlines()[1:]}
    cut_lines(
        shared / "anime" / "anime.csv",
        raw / "anime" / "anime.csv",
        lambda line: line.split(b",")[0].decode() in anime_ids,
    )
    copy(fixtures / "netflix" / "combined_data_1.txt", raw / "netflix" / "combined_data_1.txt")
    movies = {
        line[:-1]
        for line in (fixtures / "netflix" / "combined_data_1.txt").read_text().splitlines()
        if line.endswith(":")
    }
    cut_lines(
        shared / "netflix" / "movie_titles.txt",
        raw / "netflix" / "movie_titles.txt",
        lambda line: line.split(b",")[0].decode() in movies,
        header=False,
    )
    foodcom_users(
        shared / "foodcom" / "RAW_interactions.csv", fixtures / "foodcom" / "RAW_recipes.csv", raw / "foodcom"
    )
    copy(fixtures / "foodcom" / "RAW_recipes.csv", raw / "foodcom" / "RAW_recipes.csv")
    copy(fixtures / "hotelrec" / "HotelRec.txt", raw / "hotelrec" / "HotelRec.txt")
    for name in ("wikirec_edits.jsonl", "wikirec_articles.jsonl"):
        gzip_file(fixtures / "wikirec" / name, raw / "wikirec")


def copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def gzip_file(source: Path, folder: Path) -> None:
    """``source`` gzipped into ``folder`` under its name plus ``.gz``, as the owners ship it."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as handle, gzip.open(folder / f"{source.name}.gz", "wb") as out:
        shutil.copyfileobj(handle, out)


def copy_head(source: Path, target: Path, lines: int) -> None:
    """The first ``lines`` lines of ``source``, bytes as they are (encoding and line ends kept)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"".join(source.read_bytes().splitlines(True)[:lines]))


def cut_lines(source: Path, target: Path, keep, header: bool = True) -> None:
    """``source``'s lines (bytes as they are) that ``keep`` accepts, after its header line if any."""
    lines = source.read_bytes().splitlines(True)
    first, rest = (lines[:1], lines[1:]) if header else ([], lines)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"".join(first + [line for line in rest if keep(line)]))


def steam_products(folder: Path) -> set[str]:
    """The Steam app ids the review fixtures name (both files are Python literals)."""
    import ast

    ids = set()
    for line in (folder / "steam_reviews.json").read_text().splitlines():
        ids.add(str(ast.literal_eval(line)["product_id"]))
    for line in (folder / "australian_user_reviews.json").read_text().splitlines():
        ids.update(str(r["item_id"]) for r in ast.literal_eval(line)["reviews"])
    return ids


def foodcom_users(interactions: Path, recipes: Path, folder: Path) -> None:
    """The real Food.com interactions of the recipes the recipes fixture holds, records re-written
    with the sample's own CRLF line ends."""
    with open(recipes, newline="", encoding="utf-8") as handle:
        recipe_ids = {row["id"] for row in csv.DictReader(handle)}
    with open(interactions, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "RAW_interactions.csv", "w", newline="", encoding="utf-8") as out:
        csv.writer(out, lineterminator="\r\n").writerows([rows[0], *[r for r in rows[1:] if r[1] in recipe_ids]])


def build_raw_tree(shared: Path, fixtures: Path, raw: Path) -> Path:
    """Write the miniature raw tree under ``raw`` and return it."""
    amazon(shared, raw)
    yelp(shared, raw)
    movielens(shared, raw)
    fixtures_and_side_files(shared, fixtures, raw)
    return raw
