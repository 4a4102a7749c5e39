"""Benchmark splits in P5's protocol (Geng et al. 2022), built from canonical tables or loaded from
P5's own ``sequential_data.txt`` + ``datamaps.json``.

Building follows P5's preprocessing (inherited from S3-Rec): a dataset's interactions (optionally cut
to a time window, as for Yelp 2019) are filtered to an iterative user/item k-core; each user's items
are put in CHRONOLOGICAL order; users are numbered ``1..`` in order of their first row in the input
and items ``1..`` in order of first appearance while walking the users' sequences in that order.

Two splits are drawn: sequential (leave-one-out: last item test, second-to-last validation) and
rating: P5's own, from its ``rating_splits_augmented.pkl`` where given (:mod:`.ratings`), else
redrawn here (a seeded random 80/10/10 over interactions). RecGPT's leak fix then drops from the training
split of both tasks every interaction whose (user, item) is in validation or test of either task, and
those held-out (user, item) pairs form the ``held_out`` table that keeps them out of pre-training
and instruction pairs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from recgpt_data.errors import UsageError
from recgpt_data.hashing import unit_interval
from recgpt_data.p5 import HELD_OUT, PAIR, TEST, TRAIN, VALIDATION
from recgpt_data.p5.ratings import official_rating_split
from recgpt_data.schema import CHRONOLOGICAL
from recgpt_data.stage import Drops

LEAK_DROPPED = "leak_dropped"  # a training interaction whose (user, item) another split evaluates
ORDINAL = ("src_file", "src_line")
SEQUENTIAL_FILE = "sequential_data.txt"
DATAMAPS_FILE = "datamaps.json"


@dataclass(frozen=True)
class P5Split:
    """A benchmark in P5's numbering: raw ids by number (``users[0]`` is user ``1``) and each user's
    chronological item numbers."""

    users: list[str]
    items: list[str]
    sequences: list[list[int]]

    @property
    def interactions(self) -> int:
        return sum(len(s) for s in self.sequences)

    def raw_sequences(self) -> dict[str, list[str]]:
        """Each raw user id's raw item ids, in order."""
        return {self.users[u]: [self.items[i - 1] for i in seq] for u, seq in enumerate(self.sequences)}


def datamaps(split: P5Split) -> dict[str, dict[str, str]]:
    """P5's ``datamaps.json`` id maps (ids as decimal strings, as P5 writes them)."""
    return {
        "user2id": {u: str(n) for n, u in enumerate(split.users, 1)},
        "item2id": {i: str(n) for n, i in enumerate(split.items, 1)},
        "id2user": {str(n): u for n, u in enumerate(split.users, 1)},
        "id2item": {str(n): i for n, i in enumerate(split.items, 1)},
    }


def sequential_text(split: P5Split) -> str:
    """P5's ``sequential_data.txt``: ``user item item ...`` a line, users in number order."""
    return "".join(f"{u} {' '.join(map(str, seq))}\n" for u, seq in enumerate(split.sequences, 1))


def load_p5(folder: str | Path) -> P5Split:
    """P5's own split from ``folder`` (``sequential_data.txt`` + ``datamaps.json``), checked: users
    numbered ``1..n`` in file order, every item number in the map."""
    folder = Path(folder)
    sequential, maps_path = folder / SEQUENTIAL_FILE, folder / DATAMAPS_FILE
    for path in (sequential, maps_path):
        if not path.is_file():
            raise UsageError(f"{folder}: no {path.name} (a P5 split needs {SEQUENTIAL_FILE} and {DATAMAPS_FILE})")
    maps = json.loads(maps_path.read_text(encoding="utf-8"))
    id2user, id2item = maps.get("id2user"), maps.get("id2item")
    if not isinstance(id2user, dict) or not isinstance(id2item, dict):
        raise UsageError(f"{maps_path}: missing id2user / id2item maps")
    items = [id2item[str(n)] for n in range(1, len(id2item) + 1)]
    users, sequences = [], []
    with open(sequential, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            fields = line.split()
            if not fields:
                continue
            if fields[0] != str(number) or fields[0] not in id2user:
                raise UsageError(f"{sequential}:{number}: expected user {number}, found {fields[0]!r}")
            sequence = [int(f) for f in fields[1:]]
            if not sequence or min(sequence) < 1 or max(sequence) > len(items):
                raise UsageError(f"{sequential}:{number}: item numbers outside 1..{len(items)}")
            users.append(id2user[fields[0]])
            sequences.append(sequence)
    if len(users) != len(id2user):
        raise UsageError(f"{sequential}: {len(users)} users but datamaps.json maps {len(id2user)}")
    return P5Split(users, items, sequences)


def kcore(frame: pl.DataFrame, k: int) -> tuple[pl.DataFrame, Drops, int]:
    """The iterative ``k``-core: drop users and items with fewer than ``k`` interactions until none
    are left (rows, as P5 counts them); the rows dropped are counted, and the rounds run returned."""
    drops = Drops()
    rounds = 0
    while True:
        kept = frame.filter((pl.len().over("user_id") >= k) & (pl.len().over("item_id") >= k))
        if kept.height == frame.height:
            break
        drops.count("kcore", frame.height - kept.height)
        frame, rounds = kept, rounds + 1
    return frame, drops, rounds


def sequences_of(events: pl.DataFrame) -> tuple[pl.DataFrame, P5Split]:
    """Number users and items P5's way and put each user's events in CHRONOLOGICAL order.

    ``events`` must carry ``__first`` (the user's first input ordinal). Returns the events with
    ``user_index``, ``item_index`` (1-based) and ``position`` (0-based, in the user's sequence)
    added, sorted by user number then position, and the :class:`P5Split`."""
    ordered = events.sort(["__first", *CHRONOLOGICAL], maintain_order=True)
    ordered = ordered.with_columns(pl.col("__first").rank("dense").cast(pl.Int64).alias("user_index"))
    item_order = ordered.select("item_id").unique(maintain_order=True)
    ordered = ordered.join(
        item_order.with_row_index("item_index", offset=1).with_columns(pl.col("item_index").cast(pl.Int64)),
        on="item_id",
        how="left",
        maintain_order="left",
    ).with_columns(pl.int_range(pl.len()).over("user_index").cast(pl.Int64).alias("position"))
    grouped = ordered.group_by("user_index", maintain_order=True).agg("user_id", "item_index")
    split = P5Split(
        users=[ids[0] for ids in grouped["user_id"].to_list()],
        items=item_order["item_id"].to_list(),
        sequences=grouped["item_index"].to_list(),
    )
    return ordered.drop("__first"), split


def sequential_split(events: pl.DataFrame) -> pl.Series:
    """Leave-one-out per user: the last event test, the one before validation, the rest train."""
    from_end = pl.len().over("user_index") - pl.col("position")
    return events.select(
        pl.when(from_end == 1).then(pl.lit(TEST)).when(from_end == 2).then(pl.lit(VALIDATION)).otherwise(pl.lit(TRAIN))
    ).to_series()


def rating_split(events: pl.DataFrame, seed: int, fractions: tuple[float, float, float]) -> pl.Series:
    """A seeded random split of the events into train / validation / test by ``fractions``: events
    ordered by a stable hash of (user, item, input ordinal), then cut at the rounded shares."""
    key = pl.concat_str(["user_id", "item_id", "src_file", pl.col("src_line").cast(pl.String)], separator="\x1f")
    draws = unit_interval(events.select(key.alias("k"))["k"], seed)
    order = events.select(draws.alias("d"), pl.int_range(pl.len()).alias("i")).sort(["d", "i"])["i"]
    n = events.height
    n_train = round(n * fractions[0])
    n_valid = round(n * fractions[1])
    rank = pl.col("rank")  # each row's place in the draw order
    label = pl.when(rank < n_train).then(pl.lit(TRAIN)).when(rank < n_train + n_valid).then(pl.lit(VALIDATION))
    ranked = pl.DataFrame({"rank": order.arg_sort()})
    return ranked.select(label.otherwise(pl.lit(TEST)).alias("rating_split")).to_series()


def fix_leaks(events: pl.DataFrame) -> tuple[pl.DataFrame, Drops]:
    """RecGPT's leak fix: a training event of either task whose (user, item) is in validation or
    test of either task becomes ``leak_dropped`` (counted by task)."""
    drops = Drops()
    evaluated = pl.concat(
        [events.filter(pl.col(column) != TRAIN).select(*PAIR) for column in ("sequential_split", "rating_split")]
    ).unique()
    flagged = events.join(evaluated.with_columns(pl.lit(True).alias("__held")), on=list(PAIR), how="left")
    flagged = flagged.with_columns(pl.col("__held").fill_null(False))
    for column in ("sequential_split", "rating_split"):
        leak = (pl.col(column) == TRAIN) & pl.col("__held")
        drops.count(f"{column.removesuffix('_split')}_train:leak", int(flagged.select(leak.sum()).item()))
        flagged = flagged.with_columns(pl.when(leak).then(pl.lit(LEAK_DROPPED)).otherwise(pl.col(column)).alias(column))
    return flagged.drop("__held"), drops


@dataclass(frozen=True)
class BenchmarkBuild:
    """A built benchmark: its events (one row per interaction, with ids, positions and both splits),
    its P5 numbering, what it left out of its copy of the data (k-core, leak fix) and the k-core's
    rounds, and how P5's official rating reviews matched its events (empty if redrawn)."""

    events: pl.DataFrame
    split: P5Split
    left_out: Drops
    kcore_rounds: int
    rating_matches: dict[str, int] = field(default_factory=dict)


def build_benchmark(
    interactions: pl.LazyFrame,
    dataset: str,
    k: int = 5,
    start: datetime | None = None,
    end: datetime | None = None,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    official: pl.DataFrame | None = None,
) -> BenchmarkBuild:
    """A P5-protocol benchmark of ``dataset``'s interactions (``start`` <= time < ``end`` where given),
    its rating split P5's ``official`` reviews (:func:`.ratings.read_rating_splits`) where given,
    else drawn with ``seed`` by ``fractions``."""
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise UsageError(f"rating split fractions must sum to 1, got {fractions}")
    frame = interactions.filter(pl.col("dataset") == dataset)
    if start is not None:
        frame = frame.filter(pl.col("timestamp") >= start)
    if end is not None:
        frame = frame.filter(pl.col("timestamp") < end)
    events = frame.collect()
    if events.height == 0:
        raise UsageError(f"benchmark: no interactions of dataset {dataset!r} (in the time window)")
    firsts = (
        events.with_row_index("__row")
        .sort([*ORDINAL, "__row"])
        .select("user_id")
        .unique(maintain_order=True)
        .with_row_index("__first")
    )
    events = events.join(firsts, on="user_id", how="left", maintain_order="left")
    events, left_out, rounds = kcore(events, k)
    if events.height == 0:
        raise UsageError(f"benchmark: nothing of {dataset!r} survives the {k}-core")
    events, split = sequences_of(events)
    events = events.with_columns(sequential_split(events).alias("sequential_split"))
    matches: dict[str, int] = {}
    if official is None:
        events = events.with_columns(rating_split(events, seed, fractions))
    else:
        events, matches = official_rating_split(events, official)
    events, leaks = fix_leaks(events)
    left_out.update(leaks)
    return BenchmarkBuild(events, split, left_out, rounds, matches)


def held_out_rows(events: pl.DataFrame, benchmark: str, dataset: str) -> pl.DataFrame:
    """The ``held_out`` rows of a built benchmark: every validation and test interaction of either
    task, once per (user, item, split), in sequence order."""
    rows = pl.concat(
        [
            events.filter(pl.col(column).is_in([VALIDATION, TEST])).select(
                "user_index", "position", *PAIR, pl.col(column).alias("split")
            )
            for column in ("sequential_split", "rating_split")
            if column in events.columns
        ]
    ).sort(["user_index", "position", "split"], maintain_order=True)
    rows = rows.unique([*PAIR, "split"], keep="first", maintain_order=True)
    return rows.select(pl.lit(benchmark).alias("benchmark"), pl.lit(dataset).alias("dataset"), *PAIR, "split").cast(
        HELD_OUT
    )


def p5_events(split: P5Split) -> pl.DataFrame:
    """The events of a loaded P5 split: raw and numbered ids, positions and the sequential split."""
    rows = [
        (split.users[u], split.items[i - 1], u + 1, i, p)
        for u, seq in enumerate(split.sequences)
        for p, i in enumerate(seq)
    ]
    frame = pl.DataFrame(
        rows,
        schema={
            "user_id": pl.String,
            "item_id": pl.String,
            "user_index": pl.Int64,
            "item_index": pl.Int64,
            "position": pl.Int64,
        },
        orient="row",
    )
    return frame.with_columns(sequential_split(frame).alias("sequential_split"))
