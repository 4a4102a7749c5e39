"""Language identification: identical to langdetect, deterministic, blanking by default, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from langdetect.detector_factory import DetectorFactory
from langdetect.lang_detect_exception import LangDetectException

from recgpt_data.clean.langid import PROFILES, BatchDetector, LangidParams, detector, langid_stage
from recgpt_data.ingest import ingest
from recgpt_data.stage import Context

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "benchmarks" / "data" / "langid_non_english.jsonl"
MAGAZINE = "amazon2018/Magazine_Subscriptions_5.json"


@pytest.fixture(scope="module")
def reference() -> DetectorFactory:
    """langdetect's own detector, profiles loaded in name order, seed 0."""
    factory = DetectorFactory()
    factory.load_json_profile([p.read_text(encoding="utf-8") for p in sorted(PROFILES.iterdir())])
    factory.set_seed(0)
    return factory


def langdetect_label(factory: DetectorFactory, text: str) -> str | None:
    detector = factory.create()
    detector.append(text)
    try:
        return detector.detect()
    except LangDetectException:
        return None


@pytest.fixture(scope="module")
def magazine_texts(shared: Path) -> list[str | None]:
    with open(shared / MAGAZINE, encoding="utf-8") as handle:
        return [json.loads(line).get("reviewText") for line in handle]


@pytest.fixture(scope="module")
def magazine(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    out = tmp_path_factory.mktemp("magazine")
    ingest("amazon2018", [shared / MAGAZINE], out)
    return pl.read_parquet(out / "interactions" / "**" / "*.parquet")


def foreign_texts() -> list[str]:
    with CORPUS.open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle]


def test_same_labels_as_langdetect_on_real_reviews(reference, magazine_texts):
    texts = [t for t in magazine_texts if t]
    expected = [langdetect_label(reference, t) for t in texts]
    assert len(texts) == 2374
    assert [d.lang for d in detector(0).detect(texts)] == expected
    assert sum(label != "en" for label in expected) > 300  # the short-review noise is reproduced too


def test_same_labels_as_langdetect_on_non_english_texts(reference):
    texts = foreign_texts()
    expected = [langdetect_label(reference, t) for t in texts]
    assert len(texts) == 680
    assert [d.lang for d in detector(0).detect(texts)] == expected


def test_same_ngrams_as_langdetect_on_awkward_text(reference):
    names = {i: gram for gram, i in detector(0)._ids.items()}
    texts = [
        "GREAT WORK MAT FOR ELECTRIC GUITARS. HOWEVER, I never leave it",
        "Tiếng Việt có dấu: Tiếng Việt",  # combining tone marks folded by normalize_vi
        "日本語のテキストと English words mixed 中文",
        "see https://example.com/a?b=1 or mail me@example.org   now  ",
        "Ünïcödé   ÀÉÎ œ ß ﬁ ＡＢＣ",
        " a ",
    ]
    for text in texts:
        ours = [names[i] for i in memoryview(detector(0).features(text)).cast("i")]
        theirs = reference.create()
        theirs.append(text)
        theirs.cleaning_text()
        assert ours == theirs._extract_ngrams(), text


def test_another_seed_is_langdetect_with_that_seed(reference, magazine_texts):
    texts = [t for t in magazine_texts if t][:300]
    reference.set_seed(7)
    try:
        expected = [langdetect_label(reference, t) for t in texts]
    finally:
        reference.set_seed(0)
    assert [d.lang for d in BatchDetector(seed=7, batch=64).detect(texts)] == expected


def test_stage_blanks_non_english_text_and_keeps_the_interaction(reference, magazine, magazine_texts):
    letters = [sum(ch.isalpha() for ch in t) if t else 0 for t in magazine_texts]
    judged = [t for t, n in zip(magazine_texts, letters) if t and n >= 20]
    foreign = sum(langdetect_label(reference, t) not in (None, "en") for t in judged)
    output = langid_stage({"interactions": magazine.lazy()}, LangidParams(), Context())
    frame = output.tables["interactions"]
    assert frame.height == magazine.height == 2375
    assert output.stats.changed == {"review_text:language_not_allowed": foreign}
    assert output.stats.info["too_short"] == sum(1 for t, n in zip(magazine_texts, letters) if t and n < 20)
    assert output.stats.info["no_text"] == sum(1 for t in magazine_texts if not t)
    assert frame["review_text"].null_count() == magazine["review_text"].null_count() + foreign
    assert frame.filter(pl.col("lang").is_in(["en"]).not_())["review_text"].null_count() == foreign


def test_stage_drop_action_drops_the_interactions(magazine):
    blank = langid_stage({"interactions": magazine}, LangidParams(), Context())
    drop = langid_stage({"interactions": magazine}, LangidParams(action="drop"), Context())
    blanked = blank.stats.changed["review_text:language_not_allowed"]
    assert drop.stats.dropped == {"language_not_allowed": blanked}
    assert drop.tables["interactions"].height == magazine.height - blanked


def test_allowed_languages_are_configurable(magazine):
    output = langid_stage({"interactions": magazine}, LangidParams(allowed=["en", "ro", "af"]), Context())
    by_language = langid_stage({"interactions": magazine}, LangidParams(), Context()).stats.info
    expected = sum(n for lang, n in by_language["not_allowed_by_language"].items() if lang not in ("ro", "af"))
    assert output.stats.changed["review_text:language_not_allowed"] == expected


def test_stage_is_deterministic_and_keeps_unknown_columns(magazine):
    frame = magazine.with_columns(pl.lit(1).alias("cluster_id"))
    first = langid_stage({"interactions": frame}, LangidParams(), Context()).tables["interactions"]
    second = langid_stage({"interactions": frame}, LangidParams(), Context()).tables["interactions"]
    assert first.equals(second)
    assert first.columns == [*frame.columns, "lang"]


def test_bad_input_is_counted_not_fatal(magazine_texts):
    long_review = " ".join(t for t in magazine_texts if t)[:1_000_000]
    frame = pl.DataFrame(
        {"review_text": [None, "", "😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀", "\ufffd" * 40, long_review]}
    )
    output = langid_stage({"interactions": frame}, LangidParams(), Context())
    info = output.stats.info
    assert (info["no_text"], info["too_short"], info["judged"]) == (2, 2, 1)
    assert output.tables["interactions"]["lang"].to_list() == [None, None, None, None, "en"]


def test_python_api_takes_surrogates_and_non_text():
    results = detector(0).detect(["\ud800 lone surrogate in otherwise English text", None, "", "1234 !!! ..."])
    assert [r.lang for r in results] == ["en", None, None, None]
