"""The cross-release rule on real reviews: the 2014 copy of a 2018 review is dropped, across datasets,
the same in any number of user buckets.

The 2014 side is the real Amazon 2014 Musical Instruments 5-core file and a ``reviews_Beauty_5``
file built at test time from real rows: the 2018 ``All_Beauty_5.json`` reviews whose (reviewer,
ASIN) pair P5's Beauty split (OpenP5's raw-id ``user_sequence.txt``, taken from the 2014 Beauty
5-core) also holds, written in the 2014 fields. The releases share reviewer ids, ASINs, times and
texts, so these are the 2014 copies of 2018 reviews, filed under another category name. Expected
counts come from reading the raw files with the standard library.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import polars as pl
import pytest

from recgpt_data.dedup.cross_release import OLDER_NOT_KEPT, SAME_ITEM_TIME, SAME_TEXT, copy_reasons
from recgpt_data.pipeline.dropped import dropped_rows
from recgpt_data.pipeline.runner import run_spec
from recgpt_data.pipeline.spec import load_spec
from recgpt_data.schema import conform

FIELDS_2014 = ("reviewerID", "asin", "reviewerName", "reviewText", "overall", "summary", "unixReviewTime", "reviewTime")
MIN_TEXT = 20


def plain_text(text: str | None) -> str | None:
    """The text rule's comparison form, re-stated with Python's re."""
    return None if text is None else re.sub(r"\s+", " ", text.lower()).strip()


def read_2014(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def releases(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """The raw rows of both releases, with the 2014 Beauty copies written to a tmp folder."""
    folder = tmp_path_factory.mktemp("releases")
    new = [json.loads(line) for line in (shared / "amazon2018" / "All_Beauty_5.json").read_text().splitlines()]
    pairs = set()
    for line in (shared / "openp5" / "Beauty" / "user_sequence.txt").read_text().splitlines():
        user, *items = line.split()
        pairs.update((user, item) for item in items)
    copies = [{k: r[k] for k in FIELDS_2014 if k in r} for r in new if (r["reviewerID"], r["asin"]) in pairs]
    with gzip.open(folder / "reviews_Beauty_5.json.gz", "wt", encoding="utf-8") as out:
        out.writelines(json.dumps(r) + "\n" for r in copies)
    instruments = shared / "amazon2014" / "reviews_Musical_Instruments_5.json.gz"
    return {
        "2018": new,
        "2014": copies + read_2014(instruments),
        "files_2018": [shared / "amazon2018" / "All_Beauty_5.json"],
        "files_2014": [folder / "reviews_Beauty_5.json.gz", instruments],
    }


def expected_reasons(releases: dict) -> list[str | None]:
    """Per 2014 row, in file order: which rule matches it against the 2018 rows, if any."""
    item_time = {(r["reviewerID"], r["asin"], r["unixReviewTime"]) for r in releases["2018"]}
    texts = {
        (r["reviewerID"], plain_text(r.get("reviewText")))
        for r in releases["2018"]
        if len(plain_text(r.get("reviewText")) or "") >= MIN_TEXT
    }
    reasons = []
    for r in releases["2014"]:
        if (r["reviewerID"], r["asin"], r["unixReviewTime"]) in item_time:
            reasons.append(SAME_ITEM_TIME)
        elif (r["reviewerID"], plain_text(r.get("reviewText"))) in texts:
            reasons.append(SAME_TEXT)
        else:
            reasons.append(None)
    return reasons


def build(releases: dict, out: Path, partitions: int, keep_older: str) -> Path:
    """Ingest both releases and run the cross-release stage in ``partitions`` user buckets."""
    sources = ", ".join(
        f'{{ format = "{release}", paths = {json.dumps([str(p) for p in releases[f"files_{release[-4:]}"]])} }}'
        for release in ("amazon2018", "amazon2014")
    )
    spec = out.parent / f"{out.name}.toml"
    spec.write_text(
        f'name = "cross"\npartitions = {partitions}\n\n[[stages]]\nstage = "ingest"\n'
        f"params.sources = [{sources}]\n\n"
        f'[[stages]]\nstage = "cross_release"\nparams.keep_older = "{keep_older}"\n'
    )
    run_spec(load_spec(spec), out)
    return out


@pytest.fixture(scope="module")
def runs(releases: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The stage run in one bucket and in four, keeping the 2014 rows 2018 does not carry."""
    root = tmp_path_factory.mktemp("cross_runs")
    return {n: build(releases, root / f"out{n}", n, "unmatched") for n in (1, 4)}


def stage_stats(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text())["stages"]["cross_release"]


def test_the_2014_copies_of_2018_reviews_are_dropped_across_datasets(releases: dict, runs: dict) -> None:
    """22 All_Beauty 2018 reviews are P5 Beauty pairs: their 2014 copies (dataset amazon2014/Beauty)
    go as same user, item and time; no Musical Instruments review of 2014 has a copy in All_Beauty."""
    reasons = expected_reasons(releases)
    want = {reason: reasons.count(reason) for reason in (SAME_ITEM_TIME, SAME_TEXT) if reasons.count(reason)}
    assert want == {SAME_ITEM_TIME: 22}
    stats = stage_stats(runs[4])
    assert stats["dropped"] == want
    assert stats["rows_in"]["interactions"] == len(releases["2018"]) + len(releases["2014"])
    assert stats["rows_out"]["interactions"] == len(releases["2018"]) + reasons.count(None)
    assert stats["info"]["dropped_by_dataset"] == {"amazon2014/Beauty": {SAME_ITEM_TIME: 22}}


def test_every_dropped_row_carries_its_reason(releases: dict, runs: dict) -> None:
    (dropped,) = [d for d in dropped_rows(runs[4]) if d.stage == "cross_release"]
    rows = dropped.rows.collect()
    copies = {(r["reviewerID"], r["asin"]) for r, reason in zip(releases["2014"], expected_reasons(releases)) if reason}
    assert set(zip(rows["user_id"], rows["item_id"])) == copies
    assert set(rows["dataset"]) == {"amazon2014/Beauty"}
    assert dropped.by_reason() == {SAME_ITEM_TIME: 22}


def test_buckets_do_not_change_the_result(runs: dict) -> None:
    """All of one user's rows, in every dataset and release, land in one bucket: one bucket or four
    give the same rows and the same drops."""
    frames = {
        n: pl.read_parquet(out / ".stages" / "cross_release" / "interactions" / "*.parquet").sort(
            "src_file", "src_line"
        )
        for n, out in runs.items()
    }
    assert frames[1].equals(frames[4])
    assert stage_stats(runs[1])["dropped"] == stage_stats(runs[4])["dropped"]


def test_keep_older_none_drops_every_2014_row(releases: dict, tmp_path: Path) -> None:
    out = build(releases, tmp_path / "none", 2, "none")
    reasons = expected_reasons(releases)
    assert stage_stats(out)["dropped"] == {OLDER_NOT_KEPT: reasons.count(None), SAME_ITEM_TIME: 22}
    kept = pl.read_parquet(out / ".stages" / "cross_release" / "interactions" / "*.parquet")
    assert set(kept["source"]) == {"amazon2018"}


def frame(rows: list[tuple[str, str, str, int, str]]) -> pl.DataFrame:
    """Canonical interactions from (source, user, item, day, text) rows."""
    return conform(
        pl.DataFrame(rows, schema=["source", "user_id", "item_id", "day", "review_text"], orient="row").with_columns(
            (pl.col("day").cast(pl.Int64) * 86_400_000_000).cast(pl.Datetime("us", "UTC")).alias("timestamp"),
            pl.col("source").alias("dataset"),
        ),
        "interactions",
    )


def test_a_review_filed_under_another_item_is_matched_by_its_text(releases: dict) -> None:
    """A real 2018 review, its 2014 copy under another ASIN (a relisted product) on another day: the
    text rule matches it; a short stock text ("Five Stars") by the same user on another item does not."""
    review = next(r for r in releases["2018"] if len(r.get("reviewText", "")) > 200 and r["reviewText"].isascii())
    text = review["reviewText"]
    user = review["reviewerID"]
    rows = frame(
        [
            ("amazon2018", user, review["asin"], 17_000, text),
            ("amazon2018", user, review["asin"] + "X", 17_001, "Five Stars"),
            ("amazon2014", user, "B000OTHER1", 16_000, "  " + text.upper().replace(" ", "\n")),
            ("amazon2014", user, "B000OTHER2", 16_001, "five   stars"),
            ("amazon2014", "someone-else", "B000OTHER3", 16_002, text),
        ]
    )
    reasons = copy_reasons(rows, "amazon2014", ["amazon2018"], MIN_TEXT, "unmatched").to_list()
    assert reasons == [None, None, SAME_TEXT, None, None]
