"""Language filter: naive per-review ``langdetect.detect`` against ``BatchDetector``, side by side,
and the filter's rule before and after the other opinions (CLD2, fastText), side by side.

Detectors: both run on one thread over the same texts with the same seed (``DetectorFactory.seed = 0``):

- English: every review text of the real Amazon samples in ../shared/data (2014 Musical
  Instruments and Digital Music 5-cores, 2018 Magazine Subscriptions and All Beauty 5-cores), less
  the records listed in ``NON_ENGLISH_REVIEWS``;
- non-English: benchmarks/data/langid_non_english.jsonl (spaCy's example sentences and CLD2's test
  snippets, see benchmarks/data/README.md) plus those real non-English reviews.

Agreement is the share of texts given exactly the label naive langdetect gives (a text it cannot
judge counts as the label None); the all-English baseline labels every text "en". Rates are texts
per CPU second, the two detectors taking turns over chunks of 5,000 texts.

Rules: the previous rule (langdetect alone on texts of 20 letters or more) and the current one
(``identify`` with its defaults) over the hand-checked English set
(benchmarks/data/langid_english_eval.jsonl), the non-English texts above and all English reviews:
English blanked, non-English caught, and CPU time, taking turns six times (best time kept). Other
ways of combining the three detectors are scored on the same sets from each text's opinions, and
sweeps of ``min_letters`` and ``confirm_below`` show where the cut-offs come from.

    python benchmarks/bench_langid.py [--limit N]
"""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("POLARS_MAX_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import gzip
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import langdetect
import polars as pl
from langdetect import DetectorFactory
from langdetect.lang_detect_exception import LangDetectException

from recgpt_data.clean.langid import CLD2_UNKNOWN, BatchDetector, cld2, detector, fasttext, identify

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
SHARED = Path(
    os.environ.get("RECGPT_SHARED_DATA", HERE.parent.parent / "shared" / "data")
)
CORPUS = HERE / "data" / "langid_non_english.jsonl"
EVAL = HERE / "data" / "langid_english_eval.jsonl"
KEEP_LABELS = ("en", "und")  # English, or no words at all: a text the filter must not blank
PREVIOUS_MIN_LETTERS = 20
SWEEP = (0, 3, 5, 8, 10, 15, 20)
CONFIRM_SWEEP = (0, 20, 40, 60, 80, 100, 200)
ROUNDS = 6
REVIEW_FILES = {
    "amazon2014/reviews_Musical_Instruments_5.json.gz": "reviewText",
    "amazon2014/reviews_Digital_Music_5.json.gz": "reviewText",
    "amazon2018/Magazine_Subscriptions_5.json": "reviewText",
    "amazon2018/All_Beauty_5.json": "reviewText",
}
# Real non-English reviews in the samples, found by reading every review naive langdetect did not
# call English: (file, 1-based line). Spanish, except the Serbian review at Digital Music line 1518.
NON_ENGLISH_REVIEWS = {
    "amazon2014/reviews_Digital_Music_5.json.gz": [
        948,
        1518,
        4298,
        5189,
        5346,
        5448,
        5749,
        6696,
    ],
    "amazon2014/reviews_Musical_Instruments_5.json.gz": [2141, 3155, 3753, 6209, 7760],
    "amazon2018/All_Beauty_5.json": [334, 1813, 2735, 3725, 4534],  # "muy bueno"
}
CHUNK = 5000
NON_ENGLISH_EXTRA = {"yelp/yelp_academic_dataset_review.json": ("text", [830])}


def read_lines(path: Path) -> list[bytes]:
    """Complete lines of a JSON-lines file (a truncated gzip keeps the lines before the cut)."""
    lines: list[bytes] = []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle, contextlib.suppress(EOFError):
        lines.extend(handle)  # keeps the lines read before a truncated gzip's end
    if lines and not lines[-1].endswith(b"\n"):
        lines.pop()
    return lines


def load_texts() -> tuple[list[str], list[tuple[str, str]]]:
    """English review texts, and (text, origin) of the non-English ones."""
    english: list[str] = []
    foreign: list[tuple[str, str]] = []
    for name, field in REVIEW_FILES.items():
        skip = set(NON_ENGLISH_REVIEWS.get(name, ()))
        for number, line in enumerate(read_lines(SHARED / name), start=1):
            text = json.loads(line).get(field)
            if not text:
                continue
            if number in skip:
                foreign.append((text, f"{name}:{number}"))
            else:
                english.append(text)
    for name, (field, numbers) in NON_ENGLISH_EXTRA.items():
        lines = read_lines(SHARED / name)
        foreign.extend(
            (json.loads(lines[n - 1])[field], f"{name}:{n}") for n in numbers
        )
    with CORPUS.open(encoding="utf-8") as handle:
        foreign.extend((row["text"], row["source"]) for row in map(json.loads, handle))
    return english, foreign


def naive(texts: Sequence[str]) -> list[str | None]:
    """``langdetect.detect`` one text at a time (a text it cannot judge gives None)."""
    out: list[str | None] = []
    for text in texts:
        try:
            out.append(langdetect.detect(text))
        except LangDetectException:
            out.append(None)
    return out


def timed(fn: Callable[..., T], *args: object) -> tuple[T, float]:
    """``fn(*args)`` and the CPU seconds it took (CPU time, so other work on the machine does not count)."""
    started = time.process_time()
    result = fn(*args)
    return result, time.process_time() - started


def labels_of(detector: BatchDetector, texts: Sequence[str]) -> list[str | None]:
    return [d.lang for d in detector.detect(texts)]


def agreement(a: Sequence[str | None], b: Sequence[str | None]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def previous_rule(texts: Sequence[str]) -> list[str | None]:
    """The filter before the second opinion: langdetect alone on texts of 20 letters or more."""
    frame = pl.DataFrame({"text": texts})
    letters = pl.col("text").str.count_matches(r"\p{L}")
    distinct = frame.filter(letters >= PREVIOUS_MIN_LETTERS).unique("text", maintain_order=True)
    found = distinct.with_columns(
        pl.Series("lang", [d.lang for d in detector(0).detect(distinct["text"].to_list())], dtype=pl.String)
    )
    return frame.join(found, on="text", how="left", maintain_order="left")["lang"].to_list()


def current_rule(texts: Sequence[str], **params: int) -> list[str | None]:
    """The filter as it is: ``identify`` (defaults unless given)."""
    frame, _ = identify(pl.DataFrame({"text": texts}), "text", **params)
    return frame["lang"].to_list()


def blanked(labels: Sequence[str | None]) -> int:
    """Texts a filter allowing only English blanks."""
    return sum(label is not None and label != "en" for label in labels)


@dataclass(frozen=True)
class Opinions:
    """What each detector says of one text (codes in langdetect's spelling)."""

    letters: int
    langdetect: str | None
    cld2: str  # CLD2's top language, "un" for none
    cld2_reliable: bool
    cld2_guess: str  # CLD2's best guess (bestEffort)
    fasttext: str | None  # None where fastText has no evidence


def opinions(texts: Sequence[str]) -> list[Opinions]:
    """Every detector's opinion of every text."""
    found = detector(0).detect(texts)
    out = []
    for text, result in zip(texts, found, strict=True):
        top, reliable = cld2(text)
        out.append(
            Opinions(
                sum(ch.isalpha() for ch in text),  # str.isalpha is \p{L}, as identify counts
                result.lang,
                top,
                reliable,
                cld2(text, best_effort=True)[0],
                fasttext()(text),
            )
        )
    return out


def names_foreign(code: str | None) -> bool:
    """A detector's answer names a language other than English."""
    return code not in (None, "en", CLD2_UNKNOWN)


def variant(o: Opinions, short: Callable[[Opinions], bool], overrule_english: bool = False) -> bool:
    """Whether a rule blanks the text: none under 3 letters, ``short`` decides under 60, langdetect
    from 60 (CLD2's guess for a script it lacks) unless CLD2 reliably says English; with
    ``overrule_english`` CLD2 (reliably) and fastText naming another language also overrule
    langdetect's English there."""
    if o.letters < 3:
        return False
    if o.letters < 60:
        return short(o)
    if o.langdetect == "en":
        return overrule_english and o.cld2_reliable and names_foreign(o.cld2) and names_foreign(o.fasttext)
    if o.langdetect is None:
        return names_foreign(o.cld2_guess)
    return not (o.cld2_reliable and o.cld2 == "en")


def langdetect_checked(confirm: Callable[[Opinions], bool]) -> Callable[[Opinions], bool]:
    """Under 60 letters: langdetect names another language, CLD2 does not reliably say English, and
    ``confirm`` holds (langdetect lacking the script: CLD2's guess)."""

    def short(o: Opinions) -> bool:
        if o.langdetect is None:
            return names_foreign(o.cld2_guess)
        return names_foreign(o.langdetect) and not (o.cld2_reliable and o.cld2 == "en") and confirm(o)

    return short


def cld2_confirms(o: Opinions) -> bool:
    """Version 2 of the rule: CLD2 reliably names a language, or guesses one langdetect knows."""
    known = detector(0).langs
    return (o.cld2_reliable and o.cld2 != CLD2_UNKNOWN) or (o.cld2_guess in known and o.cld2_guess != "en")


def none_says_english(o: Opinions) -> bool:
    """Neither CLD2's guess nor fastText says English, and one of them (CLD2 reliably, fastText with
    evidence) names a language."""
    if o.cld2_guess == "en" or o.fasttext == "en":
        return False
    return o.fasttext is not None or (o.cld2_reliable and o.cld2 != CLD2_UNKNOWN)


def both_name_foreign(o: Opinions) -> bool:
    """The current rule under 60 letters: CLD2's guess and fastText both name another language."""
    return names_foreign(o.cld2_guess) and names_foreign(o.fasttext)


CURRENT = "CLD2 and fastText both name another language (current rule)"
VARIANTS: dict[str, Callable[[Opinions], bool]] = {
    "langdetect alone, 20 letters or more (previous rule)": lambda o: o.letters >= 20
    and names_foreign(o.langdetect),
    "langdetect, CLD2 confirms (version 2)": lambda o: variant(o, langdetect_checked(cld2_confirms)),
    "langdetect, any CLD2 best guess confirms": lambda o: variant(
        o, langdetect_checked(lambda x: names_foreign(x.cld2_guess))
    ),
    "langdetect, fastText confirms": lambda o: variant(
        o, langdetect_checked(lambda x: names_foreign(x.fasttext))
    ),
    "langdetect, CLD2 or fastText confirms (two of three)": lambda o: variant(
        o, langdetect_checked(lambda x: names_foreign(x.cld2_guess) or names_foreign(x.fasttext))
    ),
    "langdetect, neither other says English, one confirms": lambda o: variant(
        o, langdetect_checked(none_says_english)
    ),
    "langdetect, CLD2 and fastText all name another language": lambda o: variant(
        o, langdetect_checked(both_name_foreign)
    ),
    "CLD2's best guess alone": lambda o: variant(o, lambda x: names_foreign(x.cld2_guess)),
    "fastText alone": lambda o: variant(o, lambda x: names_foreign(x.fasttext)),
    CURRENT: lambda o: variant(o, both_name_foreign),
    "current rule, and CLD2 with fastText overrule langdetect's English from 60 letters": lambda o: variant(
        o, both_name_foreign, overrule_english=True
    ),
}


def frontier(sets: dict[str, list[str]]) -> None:
    """English blanked and non-English caught by each way of combining the three detectors (how
    texts under 60 letters are judged, unless the name says otherwise)."""
    scored = {name: opinions(texts) for name, texts in sets.items()}
    print("\n| rule under 60 letters | " + " | ".join(sets) + " |")
    print("|---|" + "---:|" * len(sets))
    for label, rule in VARIANTS.items():
        counts = [sum(map(rule, found)) for found in scored.values()]
        if label == CURRENT:  # the re-statement scores exactly what identify does
            assert counts == [blanked(current_rule(texts)) for texts in sets.values()], counts
        cells = [f"{n} ({100 * n / len(t):.2f}%)" for n, t in zip(counts, sets.values())]
        print(f"| {label} | " + " | ".join(cells) + " |")


def sweep(sets: dict[str, list[str]], param: str, values: Sequence[int]) -> None:
    """Texts the current rule blanks in each set as one parameter varies."""
    print(f"\n{param} sweep (current rule otherwise):")
    print(f"| {param} | " + " | ".join(sets) + " |")
    print("|---:|" + "---:|" * len(sets))
    for value in values:
        counts = [blanked(current_rule(texts, **{param: value})) for texts in sets.values()]
        cells = [f"{n} ({100 * n / len(t):.3f}%)" for n, t in zip(counts, sets.values())]
        print(f"| {value} | " + " | ".join(cells) + " |")


def compare_rules(english: list[str], foreign: list[str]) -> None:
    """Previous and current rule side by side: English blanked, non-English caught, CPU time."""
    with EVAL.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    checked = [r["text"] for r in rows if r["label"] in KEEP_LABELS]
    short = [r["text"] for r in rows if r["label"] in KEEP_LABELS and r["letters"] < 60]
    sets = {
        f"hand-checked English ({len(checked):,}, {len(short)} under 60 letters)": checked,
        f"all English reviews ({len(english):,})": english,
        f"non-English texts ({len(foreign):,})": foreign,
    }
    for texts in sets.values():  # warm both (profiles, models, word cache)
        previous_rule(texts)
        current_rule(texts)
    times = {previous_rule: float("inf"), current_rule: float("inf")}
    for turn in range(ROUNDS):  # each goes first in turn
        for rule in list(times)[:: 1 if turn % 2 == 0 else -1]:
            _, seconds = timed(lambda r=rule: [r(texts) for texts in sets.values()])
            times[rule] = min(times[rule], seconds)
    print("\n| texts | previous rule blanks | current rule blanks |")
    print("|---|---:|---:|")
    for name, texts in sets.items():
        before, after = blanked(previous_rule(texts)), blanked(current_rule(texts))
        print(f"| {name} | {before} ({100 * before / len(texts):.2f}%) | {after} ({100 * after / len(texts):.2f}%) |")
    ratio = times[current_rule] / times[previous_rule]
    print(
        f"CPU time over all three sets, best of {ROUNDS}: previous {times[previous_rule]:.2f} s, "
        f"current {times[current_rule]:.2f} s, current/previous {ratio:.2f}"
    )
    sweep(sets, "min_letters", SWEEP)
    sweep(sets, "confirm_below", CONFIRM_SWEEP)
    frontier(sets)
    for name, texts in sets.items():
        if not name.startswith("non-English"):
            wrong = sorted({t for t, lang in zip(texts, current_rule(texts)) if lang not in (None, "en")})
            print(f"{name}: the current rule blanks {wrong}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--limit", type=int, default=0, help="use only the first N English reviews"
    )
    parser.add_argument("--rules-only", action="store_true", help="skip the naive langdetect comparison")
    args = parser.parse_args()
    english, foreign = load_texts()
    if args.limit:
        english = english[: args.limit]
    foreign_texts = [t for t, _ in foreign]
    if args.rules_only:
        compare_rules(english, foreign_texts)
        return
    DetectorFactory.seed = 0

    _, naive_init = timed(langdetect.detect, "warm up the profiles")
    detector, batch_init = timed(BatchDetector, 0)

    rows = []
    for label, texts in (
        ("English reviews", english),
        ("non-English texts", foreign_texts),
    ):
        reference: list[str | None] = []
        ours: list[str | None] = []
        naive_s = batch_s = 0.0
        for start in range(
            0, len(texts), CHUNK
        ):  # alternate, so both see the same machine
            chunk = texts[start : start + CHUNK]
            labels, seconds = timed(naive, chunk)
            reference += labels
            naive_s += seconds
            labels, seconds = timed(labels_of, detector, chunk)
            ours += labels
            batch_s += seconds
        baseline = ["en"] * len(texts)
        chars = sum(len(t) for t in texts) / len(texts)
        rows.append(
            (
                label,
                len(texts),
                chars,
                naive_s,
                batch_s,
                agreement(reference, ours),
                agreement(reference, baseline),
            )
        )
        if label == "non-English texts":
            misses = [
                (o, r, d) for (t, o), r, d in zip(foreign, reference, ours) if r != d
            ]
            labels_en = sum(r == "en" for r in reference)

    print("machine: 2 cores, 24 GiB; one thread each; CPU time; langdetect seed 0")
    print(
        f"profile load: naive {naive_init:.2f} s, BatchDetector {batch_init:.2f} s (not in the rates)"
    )
    print(
        "| texts | n | mean chars | naive texts/s | BatchDetector texts/s | speed-up | agreement | all-English baseline |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, n, chars, naive_s, batch_s, agree, base in rows:
        print(
            f"| {label} | {n:,} | {chars:.0f} | {n / naive_s:,.0f} | {n / batch_s:,.0f} | "
            f"{naive_s / batch_s:.1f}x | {100 * agree:.2f}% | {100 * base:.2f}% |"
        )
    print(f"non-English texts naive langdetect itself calls 'en': {labels_en}")
    print(f"disagreements on non-English texts: {misses[:10]}")
    compare_rules(english, foreign_texts)


if __name__ == "__main__":
    main()
