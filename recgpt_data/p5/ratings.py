"""P5's official rating splits: ``rating_splits_augmented.pkl``, read without running pickled code.

P5 drew its rating split with a seeded shuffle over inputs nobody can reproduce, so RMSE and MAE
comparable with the paper need P5's own file. It is a pickled dict: ``train``, ``val`` and ``test``
lists of review dicts (P5's notebooks give Yelp reviews the Amazon keys ``reviewerID``, ``asin``,
``overall``, ``unixReviewTime``, ``reviewText``), and ``train_indices``, ``val_indices``,
``test_indices``. ``train`` ends with P5's rating augmentation: copies of training reviews with
another ``overall``; the first ``len(train_indices)`` records are the originals.

The file is read by :func:`~recgpt_data.p5.plain_pickle.load_plain_pickle`, never by
``pickle.load``: it builds plain containers and scalars only, and refuses anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recgpt_data.errors import UsageError
from recgpt_data.p5 import HELD_OUT, PAIR, TEST, TRAIN, VALIDATION
from recgpt_data.p5.plain_pickle import load_plain_pickle

RATING_SPLITS_FILE = "rating_splits_augmented.pkl"
NO_RECORD = "no_record"  # an event of the benchmark for which P5's rating split holds no review
SPLITS = {"train": TRAIN, "val": VALIDATION, "test": TEST}  # P5's key -> this project's split name
RECORDS: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "item_id": pl.String(),
    "rating": pl.Float64(),
    "time": pl.Int64(),  # unixReviewTime: seconds (Amazon) or YYYYMMDDhhmmss digits (P5's Yelp)
    "review_title": pl.String(),
    "review_text": pl.String(),
    "split": pl.String(),
}
RECORD_COLUMNS = ("rating", "review_title", "review_text")  # what an event without them takes from its record


@dataclass(frozen=True)
class RatingSplits:
    """P5's rating split: every original review once (:data:`RECORDS`, in file order: train,
    validation, test) and how many augmentation copies of training reviews were set aside."""

    records: pl.DataFrame
    augmented: int

    def counts(self) -> dict[str, int]:
        """Reviews per split, and the augmentation copies left out."""
        by_split = dict(self.records["split"].value_counts().iter_rows())
        return {**{s: by_split.get(s, 0) for s in SPLITS.values()}, "augmented_train_copies": self.augmented}


def read_rating_splits(path: str | Path) -> RatingSplits:
    """P5's rating split at ``path`` (``rating_splits_augmented.pkl``), checked."""
    path = Path(path)
    data = load_plain_pickle(path)
    if not isinstance(data, dict) or not all(isinstance(data.get(key), list) for key in SPLITS):
        raise UsageError(f"{path}: expected P5's dict of 'train', 'val' and 'test' review lists")
    train = data["train"]
    originals = len(data["train_indices"]) if isinstance(data.get("train_indices"), list) else len(train)
    if originals > len(train):
        raise UsageError(f"{path}: {len(train)} train reviews but {originals} train_indices")
    rows = []
    for key, split in SPLITS.items():
        reviews = train[:originals] if key == "train" else data[key]
        rows += [review_row(path, key, number, review, split) for number, review in enumerate(reviews)]
    return RatingSplits(pl.DataFrame(rows, schema=RECORDS, orient="row"), len(train) - originals)


def review_row(path: Path, key: str, number: int, review: object, split: str) -> tuple:
    """One review of P5's split as a :data:`RECORDS` row, checked."""
    if not isinstance(review, dict):
        raise UsageError(f"{path}: {key}[{number}] is not a review dict")
    try:
        user, item, rating, time = review["reviewerID"], review["asin"], review["overall"], review["unixReviewTime"]
    except KeyError as missing:
        raise UsageError(f"{path}: {key}[{number}] has no {missing.args[0]!r}") from None
    if not isinstance(user, str) or not isinstance(item, str) or not isinstance(rating, int | float):
        raise UsageError(f"{path}: {key}[{number}]: reviewerID and asin must be strings, overall a number")
    if not str(time).isdigit():
        raise UsageError(f"{path}: {key}[{number}]: unixReviewTime {time!r} is not a number")
    title, text = (review.get(key) for key in ("summary", "reviewText"))
    return user, item, float(rating), int(time), plain_text(title), plain_text(text), split


def plain_text(value: object) -> str | None:
    """A review's text field, or None where it is absent or not a string."""
    return value if isinstance(value, str) else None


def official_rating_split(events: pl.DataFrame, records: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """``events`` (in user, position order) with ``rating_split`` from P5's ``records``: the k-th
    event of a (user, item) pair in sequence order takes the k-th review of the pair in time order
    (then file order); an event without one is :data:`NO_RECORD`. Events that carry no ``rating``,
    ``review_title`` or ``review_text`` (P5's own sequential files) take them from their review.
    Also returns the counts of events without a review and reviews without an event."""
    numbered = (
        records.with_row_index("__order")
        .sort(["time", "__order"])
        .with_columns(pl.int_range(pl.len()).over(list(PAIR)).alias("__k"))
    )
    taken = [c for c in RECORD_COLUMNS if c not in events.columns]
    matched = events.with_columns(pl.int_range(pl.len()).over(list(PAIR)).alias("__k")).join(
        numbered.select(*PAIR, "__k", "split", *taken), on=[*PAIR, "__k"], how="left", maintain_order="left"
    )
    labelled = matched.with_columns(pl.col("split").fill_null(NO_RECORD).alias("rating_split")).drop("split", "__k")
    counts = {
        "events_without_review": int(matched["split"].is_null().sum()),
        "reviews_without_event": numbered.height - int(matched["split"].is_not_null().sum()),
    }
    return labelled, counts


def held_out_with_records(held: pl.DataFrame, records: pl.DataFrame, benchmark: str, dataset: str) -> pl.DataFrame:
    """``held`` (a benchmark's held-out rows) with every validation and test review of P5's rating
    split added, whether or not an event of the benchmark matched it; once per (user, item, split)."""
    evaluated = records.filter(pl.col("split").is_in([VALIDATION, TEST])).select(
        pl.lit(benchmark).alias("benchmark"), pl.lit(dataset).alias("dataset"), *PAIR, "split"
    )
    combined = pl.concat([held.cast(HELD_OUT), evaluated.cast(HELD_OUT)])
    return combined.unique([*PAIR, "split"], keep="first", maintain_order=True)
