"""Draw the English evaluation set of the language filter: a seeded, length-stratified sample of
real review texts from every English sample source in ../shared/data, labelled by hand.

Each source's distinct non-empty review texts (first occurrence kept) fall into strata by letter
count; from each (source, stratum) the texts with the smallest FNV-1a 64 of "source:record" under
``SEED`` are taken, up to the stratum's quota. Short strata get larger quotas because short texts
are where language detectors err. Every sampled text was read by hand; the few that are not English
are listed in ``HAND_LABELS`` with their language ("und" for a text with no words at all) and
written with that label, all others as "en".

    python benchmarks/sample_langid_eval.py [--out benchmarks/data/langid_english_eval.jsonl]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from recgpt_data.hashing import fnv1a64

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
OUT = HERE / "data" / "langid_english_eval.jsonl"
SEED = 2018
# (lowest letter count, quota): a stratum runs up to the next one's lowest count.
STRATA = [(0, 80), (20, 80), (40, 80), (60, 80), (100, 80), (200, 40), (400, 20)]
JSON_SOURCES = {
    "amazon2014/reviews_Musical_Instruments_5.json.gz": "reviewText",
    "amazon2014/reviews_Digital_Music_5.json.gz": "reviewText",
    "amazon2018/Magazine_Subscriptions_5.json": "reviewText",
    "amazon2018/All_Beauty_5.json": "reviewText",
    "yelp/yelp_academic_dataset_review.json": "text",
}
CSV_SOURCES = {"foodcom/RAW_interactions.csv": "review"}
# Sampled texts that reading showed are not English: (source, record) -> language.
HAND_LABELS: dict[tuple[str, int], str] = {
    ("amazon2014/reviews_Musical_Instruments_5.json.gz", 3155): "es",  # "Al ser el producto fender original ..."
    ("amazon2018/All_Beauty_5.json", 334): "es",  # "muy bueno"
    ("amazon2018/All_Beauty_5.json", 239): "und",  # ":)"
}


def json_records(path: Path, field: str) -> Iterator[tuple[int, str | None]]:
    """(1-based line, text) of a JSON-lines file, plain or gzip (a truncated gzip keeps its complete lines)."""
    lines: list[bytes] = []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle, contextlib.suppress(EOFError):
        lines.extend(handle)
    if lines and not lines[-1].endswith(b"\n"):
        lines.pop()
    for number, line in enumerate(lines, start=1):
        yield number, json.loads(line).get(field)


def csv_records(path: Path, field: str) -> Iterator[tuple[int, str | None]]:
    """(1-based record after the header, text) of a CSV file."""
    csv.field_size_limit(1 << 30)
    with path.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=1):
            yield number, row[field]


def records(shared: Path) -> Iterator[tuple[str, int, str | None]]:
    """(source, record, text) for every review of every English source."""
    for name, field in JSON_SOURCES.items():
        for number, text in json_records(shared / name, field):
            yield name, number, text
    for name, field in CSV_SOURCES.items():
        for number, text in csv_records(shared / name, field):
            yield name, number, text


def stratum(letters: int) -> int:
    """Index of the stratum a text with ``letters`` letters falls in."""
    return max(i for i, (low, _) in enumerate(STRATA) if letters >= low)


def sample(shared: Path) -> list[dict[str, object]]:
    """The evaluation rows, ordered by source, stratum and draw."""
    rows = []
    seen: set[tuple[str, str]] = set()
    for name, number, text in records(shared):
        if not text or (name, text) in seen:
            continue
        seen.add((name, text))
        letters = sum(ch.isalpha() for ch in text)
        rows.append({"source": name, "record": number, "letters": letters, "text": text})
    keys = pl.Series([f"{row['source']}:{row['record']}" for row in rows])
    draws = fnv1a64(keys, seed=SEED).to_list()
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["source"], stratum(rows[i]["letters"]), draws[i]))
    taken: dict[tuple[str, int], int] = {}
    picked = []
    for i in order:
        row = rows[i]
        key = (row["source"], stratum(row["letters"]))
        if taken.get(key, 0) < STRATA[key[1]][1]:
            taken[key] = taken.get(key, 0) + 1
            picked.append(row)
    out = []
    for row in picked:
        label = HAND_LABELS.get((row["source"], row["record"]), "en")
        out.append(
            {
                "source": row["source"],
                "record": row["record"],
                "letters": row["letters"],
                "label": label,
                "text": row["text"],
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows = sample(args.shared)
    tmp = args.out.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(args.out)
    by_label: dict[str, int] = {}
    for row in rows:
        by_label[row["label"]] = by_label.get(row["label"], 0) + 1
    short = sum(1 for row in rows if row["letters"] < 60)
    print(f"{len(rows)} texts ({short} under 60 letters) -> {args.out}; labels {by_label}")


if __name__ == "__main__":
    main()
