"""The hostile-input corpus: bad (and tricky but valid) input for all 13 source formats, generated
at test time, each case with the outcome written here by hand from the formats' descriptions:
kept with exact values, rejected with a reason, or refused with a one-line error.

Record cases put one record each into a shared file per format (so one ingest reads many cases);
file cases are whole files (encodings, BOMs, line endings, compression and its truncation, empty
files, headers, wrong formats, names). :func:`all_cases` lists them; ``test_hostile.py`` runs them.
"""

from __future__ import annotations

import bz2
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

UTC_2014 = datetime(2014, 5, 13, 16, 53, 20, tzinfo=UTC)  # epoch 1400000000, by hand
INT64_MAX = 9223372036854775807
LONG_ID = "7" * 600
HUGE_TEXT = "x" * (1 << 20)
EMOJI = "caf\u00e9 \U0001f600 \u05e9\u05dc\u05d5\u05dd e\u0301"  # accents, emoji, Hebrew (RTL), combining mark
MISSING = object()  # leave the field out of the record


@dataclass(frozen=True)
class Kept:
    """The record is kept with these canonical values."""

    values: dict[str, Any]


@dataclass(frozen=True)
class Rejected:
    """The record is rejected for this reason."""

    reason: str


Outcome = Kept | Rejected


@dataclass
class Case:
    """One hostile input: files (path -> bytes) and what must come of them.

    ``records``: per (file name, table), the outcome of each record in order; ``refused``: the words
    of the one-line error the ingest must stop with instead (nothing written); ``truncated``: the
    files that must be reported cut; ``dataset``: passed as ``--dataset``; ``size``: how many record
    cases a merged file stands for."""

    id: str
    format: str
    files: dict[str, bytes]
    records: dict[tuple[str, str], list[Outcome]] = field(default_factory=dict)
    refused: str | None = None
    truncated: tuple[str, ...] = ()
    dataset: str | None = None  # passed as --dataset
    size: int = 1  # how many cases this entry stands for (record cases merged into one file)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zst(data: bytes) -> bytes:
    return pa.Codec("zstd").compress(data, asbytes=True)


def jtok(value: Any) -> str:
    """A JSON token: a Python value JSON-encoded, or raw text given as bytes."""
    return value.decode("latin-1") if isinstance(value, bytes) else json.dumps(value)


def json_object(pairs: dict[str, Any]) -> bytes:
    """A JSON object line; values given as bytes are written raw (invalid JSON on purpose)."""
    body = ", ".join(f"{json.dumps(k)}: {jtok(v)}" for k, v in pairs.items() if v is not MISSING)
    return ("{" + body + "}").encode("latin-1" if any(isinstance(v, bytes) for v in pairs.values()) else "utf-8")


def _py_value(value: Any) -> str:
    return (
        value.decode("latin-1")
        if isinstance(value, bytes)
        else ("u" + repr(value) if isinstance(value, str) else repr(value))
    )


def py_literal(pairs: dict[str, Any]) -> bytes:
    """A Python 2 dict literal line (``u'...'`` strings) as the UCSD Steam files are written."""
    body = ", ".join(f"u{k!r}: {_py_value(v)}" for k, v in pairs.items() if v is not MISSING)
    return ("{" + body + "}").encode("utf-8")


@dataclass(frozen=True)
class Interactions:
    """How one format writes an interaction record, and what the canonical row of a good one is.

    ``encode(user, item, rating, time, text)`` gives a record line; ``time_value(t)`` the canonical
    timestamp of a good time token; ``good`` the tokens of a good record."""

    format: str
    file: str
    header: bytes
    encode: Callable[..., bytes]
    good: dict[str, Any]
    expect_time: datetime | None
    json: bool = True
    rating: bool = True
    rating_max: float = 5.0
    numeric_user: bool = False
    numeric_item: bool = True
    time: str = "epoch"  # epoch, text or none
    time_required: bool = True
    text: bool = True
    separator: bytes = b","
    table: str = "interactions"


def _amazon2014(u, i, r, t, x) -> bytes:
    return json_object({"reviewerID": u, "asin": i, "overall": r, "unixReviewTime": t, "reviewText": x})


def _amazon2018(u, i, r, t, x) -> bytes:
    return json_object(
        {"reviewerID": u, "asin": i, "overall": r, "unixReviewTime": t, "reviewText": x, "verified": True}
    )


def _amazon2023(u, i, r, t, x) -> bytes:
    return json_object({"user_id": u, "parent_asin": i, "rating": r, "timestamp": t, "text": x})


def _yelp(u, i, r, t, x) -> bytes:
    return json_object({"user_id": u, "business_id": i, "stars": r, "date": t, "text": x})


def _goodreads(u, i, r, t, x) -> bytes:
    return json_object({"user_id": u, "book_id": i, "rating": r, "date_added": t, "review_text": x})


def _hotelrec(u, i, r, t, x) -> bytes:
    return json_object({"hotel_url": i, "author": u, "date": t, "rating": r, "text": x})


def _wikirec(u, i, r, t, x) -> bytes:
    return json_object({"user": u, "page_id": i, "timestamp": t})


def _steam(u, i, r, t, x) -> bytes:
    return py_literal({"username": u, "product_id": i, "date": t, "text": x})


def _csv(*fields: Any) -> bytes:
    return b",".join(f if isinstance(f, bytes) else str(f).encode("utf-8") for f in fields if f is not MISSING)


def _movielens(u, i, r, t, x) -> bytes:
    return _csv(u, i, r, t)


def _foodcom(u, i, r, t, x) -> bytes:
    return _csv(u, i, t, r, x)


def _anime(u, i, r, t, x) -> bytes:
    return _csv(u, i, r)


def _netflix(u, i, r, t, x) -> bytes:
    return _csv(u, r, t)


def _bookcrossing(u, i, r, t, x) -> bytes:
    fields = [f if isinstance(f, bytes) else str(f).encode("latin-1") for f in (u, i, r) if f is not MISSING]
    return b";".join(b'"' + f + b'"' for f in fields)


HOTEL = "Hotel_Review-g187791-d205044-Reviews-Hotel_Artemide-Rome_Lazio.html"
YELP_USER, YELP_ITEM = "OkN7YI--lQnQhJNdpNubFQ", "3yI-7C8JzbG-ZaSqAGHMAQ"

FORMATS: tuple[Interactions, ...] = (
    Interactions(
        "amazon2014",
        "reviews_Books_5.json",
        b"",
        _amazon2014,
        {"user": "A1", "item": "B000000001", "rating": 4.0, "time": 1400000000, "text": "good"},
        UTC_2014,
        time_required=False,
    ),
    Interactions(
        "amazon2018",
        "All_Beauty_5.json",
        b"",
        _amazon2018,
        {"user": "A1", "item": "B000000001", "rating": 4.0, "time": 1400000000, "text": "good"},
        UTC_2014,
        time_required=False,
    ),
    Interactions(
        "amazon2023",
        "All_Beauty.jsonl",
        b"",
        _amazon2023,
        {
            "user": "AFKZENTNBQ7A7V7UXW5JJI6UGRYQ",
            "item": "B000000001",
            "rating": 4.0,
            "time": 1400000000000,
            "text": "good",
        },
        UTC_2014,
        time_required=False,
    ),
    Interactions(
        "yelp",
        "yelp_academic_dataset_review.json",
        b"",
        _yelp,
        {"user": YELP_USER, "item": YELP_ITEM, "rating": 4.0, "time": "2014-05-13 16:53:20", "text": "good"},
        UTC_2014,
        time="text",
    ),
    Interactions(
        "goodreads",
        "goodreads_reviews_poetry.json",
        b"",
        _goodreads,
        {
            "user": "a39e5b2c0fd4e6f51d3f3b8c2a1e9d07",
            "item": "258",
            "rating": 4.0,
            "time": "Tue May 13 09:53:20 -0700 2014",
            "text": "good",
        },
        UTC_2014,
        time="text",
        time_required=False,
    ),
    Interactions(
        "hotelrec",
        "HotelRec.txt",
        b"",
        _hotelrec,
        {"user": "TravelBug_72", "item": HOTEL, "rating": 4.0, "time": "2014-05-13T00:00:00", "text": "good"},
        datetime(2014, 5, 13, tzinfo=UTC),
        time="text",
    ),
    Interactions(
        "wikirec",
        "wikirec_edits.jsonl",
        b"",
        _wikirec,
        {"user": "Gnomish Coder", "item": "1164", "rating": MISSING, "time": "2014-05-13T16:53:20Z", "text": MISSING},
        UTC_2014,
        rating=False,
        time="text",
        text=False,
    ),
    Interactions(
        "steam",
        "steam_reviews.json",
        b"",
        _steam,
        {"user": "js41637", "item": "391540", "rating": MISSING, "time": "2014-05-13", "text": "good"},
        datetime(2014, 5, 13, tzinfo=UTC),
        json=False,
        rating=False,
        time="text",
    ),
    Interactions(
        "movielens",
        "ml-hostile/ratings.csv",
        b"userId,movieId,rating,timestamp",
        _movielens,
        {"user": "7001", "item": "2", "rating": 4.0, "time": 1400000000, "text": MISSING},
        UTC_2014,
        json=False,
        numeric_user=True,
        text=False,
    ),
    Interactions(
        "foodcom",
        "RAW_interactions.csv",
        b"user_id,recipe_id,date,rating,review",
        _foodcom,
        {"user": "41706", "item": "505361", "rating": 4.0, "time": "2014-05-13", "text": "good"},
        datetime(2014, 5, 13, tzinfo=UTC),
        json=False,
        numeric_user=True,
        time="text",
    ),
    Interactions(
        "anime",
        "rating.csv",
        b"user_id,anime_id,rating",
        _anime,
        {"user": "90002", "item": "11771", "rating": 8.0, "time": MISSING, "text": MISSING},
        None,
        json=False,
        rating_max=10.0,
        numeric_user=True,
        time="none",
        text=False,
    ),
    Interactions(
        "netflix",
        "combined_data_1.txt",
        b"8:",
        _netflix,
        {"user": "1000004", "item": MISSING, "rating": 4.0, "time": "2005-05-13", "text": MISSING},
        datetime(2005, 5, 13, tzinfo=UTC),
        json=False,
        numeric_user=True,
        time="text",
        text=False,
    ),
    Interactions(
        "bookcrossing",
        "BX-Book-Ratings.csv",
        b'"User-ID";"ISBN";"Book-Rating"',
        _bookcrossing,
        {"user": "900001", "item": "0440234743", "rating": 8.0, "time": MISSING, "text": MISSING},
        None,
        json=False,
        rating_max=10.0,
        numeric_user=True,
        numeric_item=False,
        time="none",
        text=False,
        separator=b";",
    ),
)


def record(f: Interactions, **tokens: Any) -> bytes:
    """One record of format ``f``: its good tokens with ``tokens`` replaced."""
    t = {**f.good, **tokens}
    return f.encode(t["user"], t["item"], t["rating"], t["time"], t["text"])


def kept(f: Interactions, **values: Any) -> Kept:
    """The canonical values of ``f``'s good record, with ``values`` replaced."""
    g = f.good
    base = {
        "user_id": g["user"],
        "item_id": "8" if f.format == "netflix" else g["item"],
        "rating": g["rating"] if f.rating else None,
        "timestamp": f.expect_time,
        "review_text": g["text"] if f.text else None,
    }
    return Kept({**base, **values})


def _time_tokens(f: Interactions) -> list[tuple[str, Any, Outcome]]:
    """Bad and edge times for ``f``: out of range (int64 max, 1970, 2100, negative) and unreadable."""
    late = "timestamp_out_of_range"
    if f.time == "epoch":
        scale = 1000 if f.format == "amazon2023" else 1
        garbage = Rejected("bad_field_type" if f.json else "bad_timestamp")
        return [
            ("time-int64-max", INT64_MAX, Rejected(late)),
            ("time-1970", 0, Rejected(late)),
            ("time-2100", 4102444800 * scale, Rejected(late)),
            ("time-negative", -1, Rejected(late)),
            ("time-text", "yesterday" if f.json else "yesterday", garbage),
        ]
    if f.time == "text":
        year_2100 = {
            "yelp": "2100-01-01 00:00:00",
            "goodreads": "Fri Jan 01 00:00:00 +0000 2100",
            "hotelrec": "2100-01-01T00:00:00",
            "wikirec": "2100-01-01T00:00:00Z",
            "steam": "2100-01-01",
            "foodcom": "2100-01-01",
            "netflix": "2100-01-01",
        }[f.format]
        year_1900 = year_2100.replace("2100", "1900").replace("Fri Jan", "Mon Jan")
        unreadable = Rejected("missing_timestamp") if f.time_required else kept(f, timestamp=None)
        return [
            ("time-2100", year_2100, Rejected(late)),
            ("time-1900", year_1900, Rejected(late)),
            ("time-text", "yesterday", unreadable),
        ]
    return []


def interaction_cases(f: Interactions) -> list[tuple[str, bytes, Outcome]]:
    """The record cases of ``f``: (name, record line, outcome)."""
    cases: list[tuple[str, bytes, Outcome]] = [("good", record(f), kept(f))]
    if f.text and f.format != "bookcrossing":
        cases += [
            ("unicode-text", record(f, text=EMOJI), kept(f, review_text=EMOJI)),
            ("huge-field", record(f, text=HUGE_TEXT), kept(f, review_text=HUGE_TEXT)),
        ]
    if f.rating:
        top = f.rating_max
        rating_column = "bad_Book-Rating" if f.format == "bookcrossing" else "bad_rating"
        cases += [
            ("rating-top", record(f, rating=top), kept(f, rating=top)),
            ("rating-99", record(f, rating=99.0), Rejected("rating_out_of_range")),
            ("rating-negative", record(f, rating=-3.0), Rejected("rating_out_of_range")),
            (
                "rating-nan",
                record(f, rating=b"NaN" if f.json else "nan"),
                Rejected("bad_field_type" if f.json else "rating_out_of_range"),
            ),
            (
                "rating-inf",
                record(f, rating=b"1e999" if f.json else "inf"),
                Rejected("bad_field_type" if f.json else "rating_out_of_range"),
            ),
            ("rating-text", record(f, rating="five"), Rejected("bad_field_type" if f.json else rating_column)),
        ]
    csv_like = not f.json and f.format != "steam"
    cases += [
        ("user-empty", record(f, user=""), Rejected("missing_user_id" if csv_like else "empty_user_id")),
        ("user-blank", record(f, user="   "), Rejected("empty_user_id")),
        ("user-too-long", record(f, user=LONG_ID), Rejected("bad_user_id")),
        ("user-missing", record(f, user=MISSING), Rejected("wrong_field_count" if csv_like else "missing_user_id")),
    ]
    if f.json or f.format == "steam":
        cases += [
            ("user-nul", record(f, user="\x00A1"), Rejected("bad_user_id")),
            ("user-newline", record(f, user="A1\nA2"), Rejected("bad_user_id")),
            ("line-nul", b"\x00", Rejected("malformed_literal" if f.format == "steam" else "malformed_json")),
            ("not-an-object", b"['A1', 'B1']" if f.format == "steam" else b'["A1", "B1"]', Rejected("not_an_object")),
            ("malformed", record(f)[:-5], Rejected("malformed_literal" if f.format == "steam" else "malformed_json")),
            (
                "nested-2000",
                record(f)[:-1] + b", 'deep': " + b"[" * 2000 + b"]" * 2000 + b"}"
                if f.format == "steam"
                else record(f)[:-1] + b', "deep": ' + b"[" * 2000 + b"]" * 2000 + b"}",
                Rejected("malformed_literal" if f.format == "steam" else "nested_too_deep"),
            ),
            (
                "invalid-utf8",
                record(f).replace(b"good" if f.text else b"Gnomish", b"\xff\xfe"),
                Rejected("invalid_utf8"),
            ),
        ]
    else:
        cases += [
            ("too-few-fields", b"1,2" if f.separator == b"," else b'"1";"2"', Rejected("wrong_field_count")),
            (
                "invalid-utf8",
                record(f, user=b"\xff" + f.good["user"].encode()),
                Rejected("bad_user_id" if f.format == "bookcrossing" else "invalid_utf8"),
            ),
        ]
    cases.append(("blank-line", b"", Rejected("blank_line")))
    wrong_user = {"amazon2014": "a-1", "amazon2018": "a-1", "amazon2023": "a b", "yelp": "short", "goodreads": "xyz"}
    if f.numeric_user or f.format in wrong_user:
        cases.append(("user-wrong-form", record(f, user=wrong_user.get(f.format, "abc")), Rejected("bad_user_id")))
    if f.format == "wikirec":
        cases.append(("user-fullwidth-kept", record(f, user="\uff21\uff11"), kept(f, user_id="\uff21\uff11")))
    wrong_item = {
        "amazon2014": "B00",
        "amazon2018": "b000000001",
        "amazon2023": "B00000000\uff11",
        "yelp": "x",
        "hotelrec": "../../etc/passwd",
    }
    if f.format != "netflix" and (f.numeric_item or f.format in wrong_item):
        cases.append(("item-wrong-form", record(f, item=wrong_item.get(f.format, "12a")), Rejected("bad_item_id")))
    cases += [(name, record(f, time=token), outcome) for name, token, outcome in _time_tokens(f)]
    if f.format == "bookcrossing":
        cases.append(("user-bare-NULL", b'NULL;"0440234743";"8"', Rejected("missing_user_id")))
    if f.format == "foodcom":
        cases.append(("quoted-separator", record(f, text='"a, ""b"""'), kept(f, review_text='a, "b"')))
    return cases


def _file(f: Interactions, lines: list[bytes], newline: bytes = b"\n") -> bytes:
    head = [f.header] if f.header else []
    return newline.join(head + lines) + newline


def _with_suffix(f: Interactions, suffix: str) -> str:
    return f.file + suffix


def _cut_gzip(data: bytes) -> tuple[bytes, int, bool]:
    """A gzip of ``data`` cut in the middle, the number of complete lines an independent zlib
    reading of the cut finds, and whether a partial line follows them."""
    packed = gz(data)
    cut = packed[: len(packed) // 2]
    import zlib

    seen = zlib.decompressobj(wbits=31).decompress(cut)
    return cut, seen.count(b"\n"), bool(seen) and not seen.endswith(b"\n")


def _cut_bz2(data: bytes) -> tuple[bytes, int, bool]:
    packed = bz2.compress(data)
    cut = packed[: len(packed) * 3 // 4]
    seen = bz2.BZ2Decompressor().decompress(cut)
    return cut, seen.count(b"\n"), bool(seen) and not seen.endswith(b"\n")


def _cut_zstd(head: list[bytes], lines: list[bytes]) -> tuple[bytes, int, bool]:
    """One zstd frame per line, the last frame cut in half; the complete lines a byte-at-a-time
    reading of the cut finds, and whether a partial line follows them."""
    frames = [zst(line + b"\n") for line in head + lines]
    cut = b"".join(frames[:-1]) + frames[-1][: len(frames[-1]) // 2]
    stream, seen = pa.CompressedInputStream(pa.BufferReader(cut), "zstd"), b""
    try:
        while byte := stream.read(1):
            seen += byte
    except OSError:
        pass
    return cut, seen.count(b"\n"), bool(seen) and not seen.endswith(b"\n")


def file_cases(f: Interactions) -> list[Case]:
    """Whole-file cases of ``f``: encodings, line endings, compression, truncation, emptiness."""
    good = record(f)
    name = f.file
    out: list[Case] = []

    def case(label: str, files: dict[str, bytes], outcomes: list[Outcome] | None, **kw: Any) -> None:
        path = next(iter(files))
        records = {} if outcomes is None else {(path.split("/")[-1], f.table): outcomes}
        out.append(Case(f"{f.format}/{label}", f.format, files, records, **kw))

    texts = [f"row {n} " + "y" * 200 for n in range(5000)]
    big = [record(f, text=t) if f.text else good for t in texts]
    big_kept = [kept(f, review_text=t) if f.text else kept(f) for t in texts]
    case("bom", {name: b"\xef\xbb\xbf" + _file(f, [good, good])}, [kept(f), kept(f)])
    case("crlf", {name: _file(f, [good, good], b"\r\n")}, [kept(f), kept(f)])
    case("gzip", {name + ".gz": gz(_file(f, [good, good]))}, [kept(f), kept(f)])
    case("bz2", {name + ".bz2": bz2.compress(_file(f, [good, good]))}, [kept(f), kept(f)])
    case("zstd", {name + ".zst": zst(_file(f, [good, good]))}, [kept(f), kept(f)])
    case("bom-gzip", {name + ".gz": gz(b"\xef\xbb\xbf" + _file(f, [good]))}, [kept(f)])
    for label, cutter in (("truncated-gzip", _cut_gzip), ("truncated-bz2", _cut_bz2)):
        data = _file(f, big)
        cut, lines, partial = cutter(data)
        complete = lines - (1 if f.header else 0)
        suffix = ".gz" if label.endswith("gzip") else ".bz2"
        expected = big_kept[: max(complete, 0)] + ([Rejected("truncated_record")] if partial else [])
        case(label, {name + suffix: cut}, expected, truncated=(name.split("/")[-1] + suffix,))
    cut, lines, partial = _cut_zstd([f.header] if f.header else [], [good] * 6)
    complete = lines - (1 if f.header else 0)
    case(
        "truncated-zstd",
        {name + ".zst": cut},
        [kept(f)] * complete + ([Rejected("truncated_record")] if partial else []),
        truncated=(name.split("/")[-1] + ".zst",),
    )
    case("empty", {name: b""}, [])
    if f.json or f.format == "steam":
        case(
            "lone-cr",
            {name: good + b"\r" + good + b"\r"},
            [Rejected("malformed_literal" if f.format == "steam" else "malformed_json")],
        )
    return out


def _by_format(name: str) -> Interactions:
    return next(f for f in FORMATS if f.format == name)


def special_cases() -> list[Case]:
    """Cases particular to some formats: wrong formats, headers, stray quotes, huge quoted fields,
    Netflix block headers, and unsafe or colliding names."""
    out: list[Case] = []
    a14, a18, a23 = _by_format("amazon2014"), _by_format("amazon2018"), _by_format("amazon2023")
    out += [
        Case(
            "amazon2014/is-really-2018",
            "amazon2014",
            {"reviews_Books_5.json": record(a18) + b"\n"},
            refused="'verified', a field of amazon2018 files",
        ),
        Case(
            "amazon2018/is-really-2014",
            "amazon2018",
            {"All_Beauty_5.json": record(a14)[:-1] + b', "helpful": [1, 2]}\n'},
            refused="'helpful', a field of amazon2014 files",
        ),
        Case(
            "amazon2018/is-really-2023",
            "amazon2018",
            {"All_Beauty.jsonl": record(a23) + b"\n"},
            refused="'parent_asin', a field of amazon2023 files",
        ),
        Case(
            "amazon2018/is-not-amazon-at-all",
            "amazon2018",
            {"All_Beauty.jsonl": b'{"user": "x", "page_id": 1}\n'},
            refused="none of its first 1 records has any of the fields reviewerID, asin",
        ),
        Case(
            "amazon2014/meta-is-really-2018",
            "amazon2014",
            {"meta_Books.json": b'{"asin": "B000000001", "title": "T", "main_cat": "Books"}\n'},
            refused="'main_cat', a field of amazon2018 files",
        ),
    ]
    for fmt, header in (
        ("movielens", b"user,item,score,time"),
        ("foodcom", b"a,b,c"),
        ("anime", b"x"),
        ("bookcrossing", b'"User";"Book"'),
    ):
        f = _by_format(fmt)
        out.append(
            Case(
                f"{fmt}/wrong-header",
                fmt,
                {f.file: header + b"\n" + record(f) + b"\n"},
                refused="header lacks column(s)",
            )
        )
        out.append(
            Case(
                f"{fmt}/header-1mb",
                fmt,
                {f.file: header + b"x" * (1 << 20) + b"\n" + record(f) + b"\n"},
                refused="(1,0",
            )
        )  # the found columns are cut, with their full length noted
    for fmt in ("movielens", "foodcom", "anime"):
        f = _by_format(fmt)
        lines = [b'"' + record(f)] + [record(f)] * 99
        out.append(
            Case(
                f"{fmt}/stray-quote-first-record",
                fmt,
                {f.file: _file(f, lines)},
                {(f.file.split("/")[-1], "interactions"): [Rejected("unterminated_quote")] + [kept(f)] * 99},
            )
        )
    foodcom = _by_format("foodcom")
    for label, size in (("quoted-200kib-next-to-bad-row", 200 << 10), ("quoted-5mb-next-to-bad-row", 5 << 20)):
        text = 'big, "quoted"\n' + "z" * size
        quoted = '"' + text.replace('"', '""') + '"'
        lines = [b"1,2", record(foodcom, text=quoted), record(foodcom)]
        out.append(
            Case(
                f"foodcom/{label}",
                "foodcom",
                {foodcom.file: _file(foodcom, lines)},
                {
                    ("RAW_interactions.csv", "interactions"): [
                        Rejected("wrong_field_count"),
                        kept(foodcom, review_text=text),
                        kept(foodcom),
                    ]
                },
            )
        )
    big_title = "T, " + "w" * (5 << 20)
    out.append(
        Case(
            "movielens/movies-5mb-title",
            "movielens",
            {"ml-hostile/movies.csv": (b"movieId,title,genres\n1,2\n" + f'2,"{big_title}",Drama\n'.encode())},
            {("movies.csv", "items"): [Rejected("wrong_field_count"), Kept({"item_id": "2", "title": big_title})]},
        )
    )
    out.append(
        Case(
            "anime/anime-5mb-name",
            "anime",
            {
                "anime.csv": (
                    b"anime_id,name,genre,type,episodes,rating,members\n1,2\n"
                    + f'7,"{big_title}","Drama, Action",TV,12,8.5,100\n'.encode()
                )
            },
            {("anime.csv", "items"): [Rejected("wrong_field_count"), Kept({"item_id": "7", "title": big_title})]},
        )
    )
    netflix = _by_format("netflix")
    out.append(
        Case(
            "netflix/bogus-block-header",
            "netflix",
            {netflix.file: b"abc:\n" + record(netflix) + b"\n8:\n" + record(netflix) + b"\n"},
            {(netflix.file, "interactions"): [Rejected("bad_item_id"), kept(netflix)]},
        )
    )
    out.append(
        Case(
            "netflix/rows-before-any-header",
            "netflix",
            {netflix.file: record(netflix) + b"\n8:\n" + record(netflix) + b"\n"},
            {(netflix.file, "interactions"): [Rejected("no_block_header"), kept(netflix)]},
        )
    )
    out.append(
        Case(
            "movielens/folder-name-unsafe",
            "movielens",
            {"ml hostile/ratings.csv": _file(_by_format("movielens"), [record(_by_format("movielens"))])},
            refused="name the dataset with --dataset",
        )
    )
    anime = _by_format("anime")
    out.append(
        Case(
            "anime/two-files-one-output",
            "anime",
            {"a/rating.csv": _file(anime, [record(anime)]), "b/rating.csv": _file(anime, [record(anime)])},
            refused="would both write rating.csv",
        )
    )
    out.append(
        Case(
            "amazon2018/folder-skips-parquet-hidden-and-tmp",
            "amazon2018",
            {
                "All_Beauty_5.json": record(a18) + b"\n",
                "All_Beauty_5.json.parquet": b"PAR1 not json",
                "._All_Beauty_5.json": b"\x00\x05\x16\x07 resource fork",
                ".hidden/All_Beauty_5.json": b"not json\n",
                "meta_All_Beauty.json.tmp": b"not json\n",
            },
            {("All_Beauty_5.json", "interactions"): [kept(a18)]},
        )
    )
    return out


UNSAFE_DATASETS = (
    "../x",
    "/abs",
    "a/../b",
    "..",
    ".",
    ".hidden",
    "a\\b",
    "",
    "a/b/c/d/e",
    "\uff41\uff42",
    "a\u0301",
    "x\x00y",
    "a b",
    "-flag",
    "a//b",
    "a/",
    "x" * 101,
    "\u2215etc",
    "a\u2024\u2024",
)


def name_cases() -> list[Case]:
    """``--dataset`` names that would leave ``--out`` or trick a reader: all refused, nothing written."""
    f = _by_format("amazon2018")
    return [
        Case(
            f"amazon2018/dataset-name-{n}",
            "amazon2018",
            {f.file: record(f) + b"\n"},
            refused="is not safe as a path",
            dataset=name,
        )
        for n, name in enumerate(UNSAFE_DATASETS)
    ]


def record_groups() -> list[Case]:
    """Each format's record cases in one file (one ingest each); ``size`` counts its cases."""
    groups = []
    for f in FORMATS:
        cases = interaction_cases(f)
        outcomes = [outcome for _, _, outcome in cases]
        groups.append(
            Case(
                f"{f.format}/records",
                f.format,
                {f.file: _file(f, [line for _, line, _ in cases])},
                {(f.file.split("/")[-1], f.table): outcomes},
                size=len(cases),
            )
        )
    return groups


def all_cases() -> list[Case]:
    """Every case of the corpus."""
    cases = record_groups() + special_cases() + name_cases()
    for f in FORMATS:
        cases += file_cases(f)
    return cases


def case_count() -> int:
    """How many hostile inputs the corpus holds (each record case counts once)."""
    return sum(c.size for c in all_cases())
