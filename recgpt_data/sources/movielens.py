"""MovieLens (GroupLens): ml-100k (``u.data`` tab-separated, ``u.item`` ISO-8859-1 with ``|`` and
19 genre flags), ml-1m / ml-10m (``::``-separated ``ratings.dat`` / ``movies.dat``; GroupLens ships
ISO-8859-1, re-encoded copies are UTF-8: both are read) and ml-latest / ml-20m / ml-25m (CSV with a
header). The dataset is ``movielens/<folder>``, e.g. ``movielens/ml-100k``. Only the ml-latest
releases may be redistributed."""

from __future__ import annotations

import polars as pl

from recgpt_data.sources.base import LINE, Role, Source, Template, from_epoch
from recgpt_data.sources.delimited import LATIN1, UTF8_OR_LATIN1, Dialect, delimited

# u.genre: the order of the 19 flags at the end of each u.item line ("unknown" means no genre).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip
NO_GENRES = "(no genres listed)"

RATING_TYPES = {"rating": pl.Float64(), "timestamp": pl.Int64()}
RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")

U_DATA = Dialect(separator="\t", quoting=False, header=False, columns=RATING_COLUMNS, types=RATING_TYPES)
U_ITEM = Dialect(
    separator="|",
    quoting=False,
    header=False,
    columns=("item_id", "title", "release_date", "video_release_date", "imdb_url", *ML100K_GENRES),
    encoding=LATIN1,
    types={g: pl.Int8() for g in ML100K_GENRES},
)
RATINGS_DAT = Dialect(
    separator="::", quoting=False, header=False, columns=RATING_COLUMNS, types=RATING_TYPES, encoding=UTF8_OR_LATIN1
)
MOVIES_DAT = Dialect(
    separator="::", quoting=False, header=False, columns=("item_id", "title", "genres"), encoding=UTF8_OR_LATIN1
)
RATINGS_CSV = Dialect(
    required=("userId", "movieId", "rating", "timestamp"), types={"rating": pl.Float64(), "timestamp": pl.Int64()}
)
MOVIES_CSV = Dialect(required=("movieId", "title", "genres"))


def ratings(raw: pl.DataFrame) -> pl.DataFrame:
    raw = raw.rename({"userId": "user_id", "movieId": "item_id"}, strict=False)
    return raw.select(
        "user_id",
        "item_id",
        from_epoch("timestamp", "s").alias("timestamp"),
        "rating",
        LINE,
    )


def movies(raw: pl.DataFrame) -> pl.DataFrame:
    raw = raw.rename({"movieId": "item_id"}, strict=False)
    genres = pl.col("genres").str.split("|").list.eval(pl.element().filter(pl.element() != NO_GENRES))
    return raw.select("item_id", "title", genres.alias("categories"), LINE)


def u_item(raw: pl.DataFrame) -> pl.DataFrame:
    flagged = [pl.when(pl.col(g) == 1).then(pl.lit(g)) for g in ML100K_GENRES[1:]]
    return raw.select(
        "item_id",
        "title",
        pl.concat_list(flagged).list.drop_nulls().alias("categories"),
        pl.struct(pl.col("release_date"), pl.col("imdb_url")).struct.json_encode().alias("extras"),
        LINE,
    )


def dataset(path) -> str:
    """``movielens/<folder>``: the release is the folder the files ship in."""
    return f"movielens/{path.parent.name}"


def redistributable(dataset: str) -> bool:
    """Whether GroupLens' terms for ``dataset`` allow sharing it: only the ml-latest releases do."""
    return dataset.split("/")[-1].startswith("ml-latest")


INTERACTION_KEYS = ("user_id", "item_id", "timestamp")

SOURCE = Source(
    name="movielens",
    roles=(
        Role("interactions", ("u.data",), delimited(U_DATA), ratings, required=INTERACTION_KEYS),
        Role("items", ("u.item",), delimited(U_ITEM), u_item, required=("item_id",)),
        Role("interactions", ("ratings.dat",), delimited(RATINGS_DAT), ratings, required=INTERACTION_KEYS),
        Role("items", ("movies.dat",), delimited(MOVIES_DAT), movies, required=("item_id",)),
        Role("interactions", ("ratings.csv",), delimited(RATINGS_CSV), ratings, required=INTERACTION_KEYS),
        Role("items", ("movies.csv",), delimited(MOVIES_CSV), movies, required=("item_id",)),
    ),
    dataset=dataset,
    rating_max=5.0,
    rating_min=0.5,
    id_patterns=(("user_id", r"\d+"), ("item_id", r"\d+")),
    template=Template(noun="movies/shows", fields=("Title", "Genres", "Rating"), response_fields=("Title", "Genres")),
    redistributable=False,
    redistributable_dataset=redistributable,
    terms=(
        "MovieLens, GroupLens Research (F. M. Harper, J. A. Konstan, ACM TiiS 2015): citation, no endorsement, "
        "no commercial use; ml-100k, ml-1m, ml-10m, ml-20m and ml-25m may not be redistributed, ml-latest "
        "releases may under the same terms."
    ),
)
