"""Text cleaning: HTML, mojibake, whitespace, empties, scrubbing, bad input; the clean stage on real data."""

from __future__ import annotations

import gzip
import html
import json
import re
from pathlib import Path

import polars as pl
import pytest

from recgpt_data.clean.item_tasks import clean_items
from recgpt_data.clean.text import clean_series
from recgpt_data.ingest import ingest
from recgpt_data.stage import Context, StageOutput, StageStats
from recgpt_data.stages.clean import CleanParams, clean_stage
from recgpt_data.stages.clean_items import CleanItemsParams
from recgpt_data.stages.langid import LangidParams, langid_stage

META = "amazon2018/meta_Magazine_Subscriptions.json.gz"
REVIEWS = "amazon2018/Magazine_Subscriptions_5.json"


def clean(values: list[str | None], **options) -> tuple[list[str | None], dict[str, int]]:
    out, counts = clean_series(
        pl.Series("text", values, dtype=pl.String),
        max_chars=options.pop("max_chars", 100_000),
        **options,
    )
    return out.to_list(), dict(counts)


def clean_items_stage(tables: dict[str, pl.LazyFrame], params: CleanItemsParams, ctx: Context) -> StageOutput:
    """What the ``clean_items`` stage's tasks do to a whole items table, as one stage output."""
    frame, drops = clean_items(
        tables["items"].collect(), params.columns, max_chars=params.max_chars, drop_untitled=params.drop_untitled
    )
    return StageOutput({"items": frame}, StageStats(), drops)


@pytest.fixture(scope="module")
def magazine(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, pl.DataFrame]:
    out = tmp_path_factory.mktemp("magazine")
    ingest("amazon2018", [shared / META, shared / REVIEWS], out)
    return {t: pl.read_parquet(out / t / "**" / "*.parquet") for t in ("interactions", "items")}


@pytest.fixture(scope="module")
def cleaned_items(magazine):
    return clean_items_stage({"items": magazine["items"].lazy()}, CleanItemsParams(), Context())


@pytest.fixture(scope="module")
def cleaned(magazine, cleaned_items):
    tables = {
        "interactions": magazine["interactions"].lazy(),
        "items": cleaned_items.tables["items"].lazy(),
    }
    return clean_stage(tables, CleanParams(), Context())


def test_markup_only_titles_become_null_and_their_items_are_dropped(shared, cleaned_items, cleaned):
    def markup_only(title: str | None) -> bool:
        return title is not None and "<" in title and re.sub(r"<[^>]*(>|$)", "", title).strip() == ""

    with gzip.open(shared / META, "rt", encoding="utf-8") as handle:
        meta = [json.loads(line) for line in handle]
    titled = {m["asin"] for m in meta if m.get("title") and not markup_only(m["title"])}
    with open(shared / REVIEWS, encoding="utf-8") as handle:
        asins = [json.loads(line)["asin"] for line in handle]
    assert cleaned_items.stats.changed["items.title:markup_only"] == 3153
    assert sum(markup_only(m.get("title")) for m in meta) == 3153
    assert cleaned_items.stats.dropped == {
        "item_without_title": sum(1 for m in meta if not m.get("title") or markup_only(m["title"]))
    }
    assert cleaned_items.tables["items"]["title"].null_count() == 0
    assert cleaned.stats.dropped == {"interaction_item_without_title": sum(1 for a in asins if a not in titled)}
    assert cleaned.tables["interactions"].height == sum(1 for a in asins if a in titled) == 19


def test_real_review_text_is_unescaped_and_whitespace_normalised(shared, magazine):
    with open(shared / REVIEWS, encoding="utf-8") as handle:
        texts = [json.loads(line).get("reviewText") for line in handle]
    entity = re.compile(r"&(#[0-9]+|#x[0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]+);")
    spaced = [u for u in (html.unescape(t) for t in texts if t) if u != " ".join(u.split())]
    stats = clean_stage(
        {name: frame.lazy() for name, frame in magazine.items()}, CleanParams(drop_untitled=False), Context()
    ).stats
    assert stats.changed["interactions.review_text:html_entities"] == sum(1 for t in texts if t and entity.search(t))
    assert stats.changed["interactions.review_text:whitespace"] == len(spaced)
    assert stats.dropped == {}


def test_html_entities_and_tags():
    out, counts = clean(
        [
            "A &amp;quot;B&amp;quot; &eacute;t&eacute;",
            "one<br/>two <a href='x'>link</a>",
            "&lt;b&gt;bold&lt;/b&gt;",
        ]
    )
    assert out == ['A "B" été', "one two link", "bold"]
    assert counts == {"html_entities": 2, "html_tags": 2, "whitespace": 2}


def test_angle_brackets_that_are_not_tags_stay():
    out, counts = clean(["I <3 it", "x <y and z> w", "a < b > c"])
    assert out == ["I <3 it", "x <y and z> w", "a < b > c"]
    assert counts == {}


def test_mojibake_is_repaired_only_where_text_is_not_ascii():
    out, counts = clean(["cafÃ©", "donâ€™t", "plain ascii", "naïve is fine"])
    assert out == ["café", "don’t", "plain ascii", "naïve is fine"]
    assert counts == {"mojibake": 2}


def test_empty_and_whitespace_only_become_null():
    out, counts = clean([None, "", "   ", "\t\n", " a \n\n b "])
    assert out == [None, None, None, None, "a b"]
    assert counts == {"whitespace": 3, "empty_to_null": 3}


def test_scrubbing_is_optional_and_counted():
    text = "Call 555-123-4567 or (555) 123-4567, mail jo.b@mail.com, see https://x.com/a?b=1 or www.y.org now"
    assert clean([text])[0] == [text]
    out, counts = clean([text, "Model 1234567890 works"], scrub=("email", "phone", "url"))
    assert out == ["Call or , mail , see or now", "Model 1234567890 works"]
    assert counts == {
        "scrub_email": 1,
        "scrub_phone": 1,
        "scrub_url": 1,
        "whitespace": 1,
    }


def test_bad_input_is_counted_not_fatal():
    huge = "word " * 250_000
    out, counts = clean(["😀😀😀", "\ufffd\ufffd", "ok\ufffd", "a\x00b\x1fc", huge], max_chars=1000)
    assert out[:4] == ["😀😀😀", None, "ok", "a b c"]
    assert len(out[4]) <= 1000
    assert counts == {
        "truncated": 1,
        "replacement_chars": 2,
        "control_chars": 1,
        "whitespace": 1,
        "empty_to_null": 1,
    }


def test_stages_keep_unknown_columns_and_are_deterministic(magazine):
    tables = {
        "interactions": magazine["interactions"].with_columns(pl.lit("x").alias("lang")),
        "items": magazine["items"].with_columns(pl.lit(1).alias("cluster_id")),
    }
    lazy = {name: frame.lazy() for name, frame in tables.items()}
    first = clean_stage(lazy, CleanParams(scrub=["url"]), Context())
    second = clean_stage(lazy, CleanParams(scrub=["url"]), Context())
    assert first.tables["interactions"].columns == tables["interactions"].columns
    assert first.tables["interactions"].equals(second.tables["interactions"])
    assert first.stats.to_dict() == second.stats.to_dict()
    items = [clean_items_stage(lazy, CleanItemsParams(), Context()) for _ in range(2)]
    assert items[0].tables["items"].columns == tables["items"].columns
    assert items[0].tables["items"].equals(items[1].tables["items"])


def test_bad_input_end_to_end(tmp_path):
    """A review file holding every kind of bad text goes through ingest, clean and langid."""
    texts = [
        None,
        "",
        "😀😀😀",
        "good product " * 80_000,
        "ok \ufffd\ufffd text for the test here",
    ]
    lines = [
        json.dumps(
            {
                "reviewerID": "A1USER0001",
                "asin": "B000000001",
                "overall": 5.0,
                "unixReviewTime": 1_500_000_000 + i,
                "reviewText": t,
            }
        ).encode()
        for i, t in enumerate(texts, start=1)
    ]
    lines.append(
        b'{"reviewerID": "A1USER0001", "asin": "B000000001", "unixReviewTime": 1500000006, "reviewText": "bad \xff\xfe bytes"}'
    )
    lines.append(
        b'{"reviewerID": "A1USER0001", "asin": "B000000001", "unixReviewTime": 1500000007, "reviewText": "lone \\ud83d surrogate"}'
    )
    (tmp_path / "Bad_Input_5.json").write_bytes(b"\n".join(lines) + b"\n")
    summary = ingest("amazon2018", [tmp_path / "Bad_Input_5.json"], tmp_path / "out")
    assert (summary.read, summary.kept, summary.rejected) == (7, 6, {"invalid_utf8": 1})
    frame = pl.read_parquet(tmp_path / "out" / "interactions" / "**" / "*.parquet")

    cleaned = clean_stage({"interactions": frame.lazy()}, CleanParams(drop_untitled=False), Context())
    assert cleaned.stats.changed == {
        "interactions.review_text:truncated": 1,
        "interactions.review_text:replacement_chars": 1,
        "interactions.review_text:control_chars": 1,  # polars reads the lone surrogate as NUL
        "interactions.review_text:whitespace": 2,
        "interactions.review_text:empty_to_null": 1,
    }
    result = cleaned.tables["interactions"]["review_text"].to_list()
    assert result[0] is None and result[1] is None and result[2] == "😀😀😀"
    assert len(result[3]) == 100_000
    assert result[4:] == ["ok text for the test here", "lone surrogate"]

    identified = langid_stage({"interactions": cleaned.tables["interactions"].lazy()}, LangidParams(), Context())
    info = identified.stats.info
    # no text: None and the emptied text; too short (< 3 letters): the emoji; judged: the other three
    assert (info["no_text"], info["too_short"], info["judged"]) == (2, 1, 3)
    assert identified.tables["interactions"].height == 6
