"""Goodreads, in two publications.

The UCSD Book Graph (Mengting Wan, Julian McAuley, RecSys 2018; ACL 2019), JSON lines, dataset
``goodreads``: ``goodreads_reviews_<genre|dedup>.json.gz`` (rating 0 = no rating: null; ``date_added``
such as ``Sun Jul 30 07:44:10 -0700 2017``, converted to UTC), ``goodreads_interactions_<genre>.json.gz``
(shelvings, ``is_read``), ``goodreads_books_<genre>.json.gz``. A books file is joined on read with the
``goodreads_book_authors.json.gz`` (author names) and ``goodreads_book_genres_initial.json.gz``
(genres) found beside it; those two are side tables, not ingested on their own.

goodbooks-10k (Zygmunt Zając, 2017), CSV, dataset ``goodreads/goodbooks-10k``: ``books.csv`` (items,
keyed by its own ``book_id``; ``goodreads_book_id`` kept in extras), ``ratings.csv`` (1-5) and
``to_read.csv`` (shelvings without rating). No timestamps: file order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl

from recgpt_data.io.storage import Location, is_remote, join, name_of
from recgpt_data.io.storage import files as storage_files
from recgpt_data.sources.amazon_common import extras_json
from recgpt_data.sources.base import (
    LINE,
    RawBatch,
    Reader,
    ReadState,
    Role,
    Source,
    Template,
    uncompressed_name,
)
from recgpt_data.sources.delimited import Dialect, delimited
from recgpt_data.sources.readers import ndjson

GOODBOOKS = "goodreads/goodbooks-10k"
DATE_FORMAT = "%a %b %d %H:%M:%S %z %Y"
NOT_RATED = 0.0

# The genre keys of goodreads_book_genres_initial.json.gz.
GENRES = (
    "children", "comics, graphic", "fantasy, paranormal", "fiction", "history, historical fiction, biography",
    "mystery, thriller, crime", "non-fiction", "poetry", "romance", "young-adult",
)  # fmt: skip

REVIEW_FIELDS = {
    "user_id": pl.String(),
    "book_id": pl.String(),
    "review_id": pl.String(),
    "rating": pl.Float64(),
    "review_text": pl.String(),
    "date_added": pl.String(),
    "n_votes": pl.Int64(),
    "n_comments": pl.Int64(),
}
INTERACTION_FIELDS = {
    "user_id": pl.String(),
    "book_id": pl.String(),
    "review_id": pl.String(),
    "is_read": pl.Boolean(),
    "rating": pl.Float64(),
    "date_added": pl.String(),
    "read_at": pl.String(),
}
BOOK_FIELDS = {
    "book_id": pl.String(),
    "title": pl.String(),
    "description": pl.String(),
    "authors": pl.List(pl.Struct({"author_id": pl.String(), "role": pl.String()})),
    "isbn": pl.String(),
    "work_id": pl.String(),
    "publisher": pl.String(),
    "publication_year": pl.String(),
    "language_code": pl.String(),
}
AUTHOR_FIELDS = {"author_id": pl.String(), "name": pl.String()}
GENRE_FIELDS = {"book_id": pl.String(), "genres": pl.Struct({g: pl.Int64() for g in GENRES})}
AUTHORS_FILE = "goodreads_book_authors.json"
GENRES_FILE = "goodreads_book_genres_initial.json"

GOODBOOKS_BOOKS = Dialect(required=("book_id", "goodreads_book_id", "authors", "title"))
GOODBOOKS_RATINGS = Dialect(required=("user_id", "book_id", "rating"), types={"rating": pl.Float64()})
GOODBOOKS_TO_READ = Dialect(required=("user_id", "book_id"))


def _text(column: str) -> pl.Expr:
    """A text field, null where the dump writes an empty string."""
    return pl.when(pl.col(column) != "").then(pl.col(column)).alias(column)


def _rating() -> pl.Expr:
    return pl.when(pl.col("rating") != NOT_RATED).then(pl.col("rating")).alias("rating")


def _date_added() -> pl.Expr:
    return pl.col("date_added").str.strptime(pl.Datetime("us", "UTC"), DATE_FORMAT, strict=False).alias("timestamp")


def reviews(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        "user_id",
        pl.col("book_id").alias("item_id"),
        _date_added(),
        _rating(),
        _text("review_text"),
        pl.col("n_votes").alias("helpful_votes"),
        extras_json(review_id=pl.col("review_id"), n_comments=pl.col("n_comments")).alias("extras"),
        LINE,
    )


def interactions(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        "user_id",
        pl.col("book_id").alias("item_id"),
        _date_added(),
        _rating(),
        extras_json(review_id=pl.col("review_id"), is_read=pl.col("is_read"), read_at=_text("read_at")).alias("extras"),
        LINE,
    )


def books(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        pl.col("book_id").alias("item_id"),
        _text("title"),
        "author",
        _text("description"),
        pl.col("genres").alias("categories"),
        extras_json(
            isbn=pl.col("isbn"),
            work_id=pl.col("work_id"),
            publisher=pl.col("publisher"),
            publication_year=pl.col("publication_year"),
            language_code=pl.col("language_code"),
        ).alias("extras"),
        LINE,
    )


def _beside(path: Location) -> list[Location]:
    """The files in the folder of ``path`` (a local folder, or the prefix an object's key is in), sorted."""
    if not is_remote(path):
        return sorted(p for p in Path(path).parent.iterdir() if p.is_file())
    folder = str(path).rsplit("/", 1)[0]
    return [join(folder, name) for name in storage_files(folder) if "/" not in name]


def _side_table(path: Location, name: str, fields: dict[str, pl.DataType]) -> tuple[pl.DataFrame | None, str | None]:
    """The whole side file ``name`` (plain or compressed) beside ``path`` (``None`` if there is
    none), and a note on the lines of it that could not be read."""
    found = [p for p in _beside(path) if uncompressed_name(name_of(p)) == name]
    if not found:
        return None, None
    side = ReadState()
    batches = list(ndjson(fields)(found[0], side))
    bad = sum(len(b.rejects) for b in batches)
    note = None
    if bad or side.warning:
        note = f"{name_of(found[0])}: {bad} unreadable line(s) left out of the join" + (
            f" ({side.warning})" if side.warning else ""
        )
    frames = [b.frame.drop(LINE) for b in batches if b.frame.height]
    return (pl.concat(frames) if frames else pl.DataFrame(schema=fields)), note


def _author_names(frame: pl.DataFrame, authors: pl.DataFrame | None) -> pl.Series:
    """Per book, the names of its authors in listed order: those without a role (the writers),
    or all listed where every one has a role; null where no name is known."""
    if authors is None or not frame.height:
        return pl.Series("author", [None] * frame.height, pl.String)
    listed = (
        frame.select(pl.int_range(pl.len()).alias("__row"), "authors")
        .explode("authors")
        .unnest("authors")
        .join(authors, on="author_id", how="left", maintain_order="left")
        .filter(pl.col("name").is_not_null())
    )
    writers = listed.filter(pl.col("role").fill_null("") == "")
    chosen = pl.concat(
        [writers, listed.join(writers.select("__row").unique(), on="__row", how="anti", maintain_order="left")]
    )
    names = (
        chosen.sort("__row", maintain_order=True)
        .group_by("__row", maintain_order=True)
        .agg(pl.col("name").str.join(", "))
    )
    rows = pl.DataFrame({"__row": pl.int_range(frame.height, eager=True)})
    return rows.join(names, on="__row", how="left", maintain_order="left")["name"].alias("author")


def _genre_lists(genres: pl.DataFrame) -> pl.DataFrame:
    present = [pl.when(pl.col("genres").struct.field(g).is_not_null()).then(pl.lit(g)) for g in GENRES]
    lists = genres.select("book_id", pl.concat_list(present).list.drop_nulls().alias("genres"))
    return lists.unique("book_id", keep="first", maintain_order=True)


def books_reader() -> Reader:
    """Books JSON lines, each batch joined with the author names and genres beside the file."""
    read_books = ndjson(BOOK_FIELDS)

    def read(path: Location, state: ReadState) -> Iterator[RawBatch]:
        authors, authors_note = _side_table(path, AUTHORS_FILE, AUTHOR_FIELDS)
        if authors is not None:
            authors = authors.unique("author_id", keep="first", maintain_order=True)
        genres, genres_note = _side_table(path, GENRES_FILE, GENRE_FIELDS)
        genre_lists = _genre_lists(genres) if genres is not None else None
        for batch in read_books(path, state):
            frame = batch.frame
            if frame.width:
                frame = frame.with_columns(_author_names(frame, authors))
                if genre_lists is not None:
                    frame = frame.join(genre_lists, on="book_id", how="left", maintain_order="left")
                else:
                    frame = frame.with_columns(pl.lit(None, pl.List(pl.String)).alias("genres"))
            yield RawBatch(frame, batch.rejects, batch.raw_text)
        state.warning = "; ".join(w for w in (state.warning, authors_note, genres_note) if w) or None

    return read


def goodbooks_books(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        pl.col("book_id").alias("item_id"),
        "title",
        pl.col("authors").alias("author"),
        extras_json(
            goodreads_book_id=pl.col("goodreads_book_id"),
            original_title=pl.col("original_title") if "original_title" in raw.columns else pl.lit(None, pl.String),
        ).alias("extras"),
        LINE,
    )


def goodbooks_ratings(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select("user_id", pl.col("book_id").alias("item_id"), "rating", LINE)


def goodbooks_to_read(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.select(
        "user_id", pl.col("book_id").alias("item_id"), pl.lit('{"shelf":"to-read"}').alias("extras"), LINE
    )


def dataset(path: Path) -> str:
    """``goodreads`` for the UCSD Book Graph files, ``goodreads/goodbooks-10k`` for goodbooks-10k."""
    return "goodreads" if path.name.startswith("goodreads_") else GOODBOOKS


USER_ITEM = ("user_id", "item_id")

SOURCE = Source(
    name="goodreads",
    roles=(
        Role(
            "interactions",
            ("goodreads_reviews_*.json",),
            ndjson(REVIEW_FIELDS),
            reviews,
            required=USER_ITEM,
            exclude=("goodreads_reviews_spoiler*",),
        ),
        Role(
            "interactions",
            ("goodreads_interactions_*.json",),
            ndjson(INTERACTION_FIELDS),
            interactions,
            required=USER_ITEM,
        ),
        Role("items", ("goodreads_books*.json",), books_reader(), books, required=("item_id",)),
        Role("items", ("books.csv",), delimited(GOODBOOKS_BOOKS), goodbooks_books, required=("item_id",)),
        Role("interactions", ("ratings.csv",), delimited(GOODBOOKS_RATINGS), goodbooks_ratings, required=USER_ITEM),
        Role("interactions", ("to_read.csv",), delimited(GOODBOOKS_TO_READ), goodbooks_to_read, required=USER_ITEM),
    ),
    dataset=dataset,
    rating_max=5.0,
    rating_min=1.0,
    id_patterns=(("user_id", r"[0-9a-f]+"), ("item_id", r"\d+")),
    template=Template(
        noun="books", fields=("Title", "Author", "Genres", "Review", "Rating"), response_fields=("Title", "Author")
    ),
    terms=(
        "UCSD Book Graph, Mengting Wan and Julian McAuley (RecSys 2018; ACL 2019): academic use with citation. "
        "goodbooks-10k, Zygmunt Zajac (2017): CC BY-SA 4.0."
    ),
)
