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
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import langdetect
import numpy as np
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

URL_RE = re.compile(r"https?://[-_.?&~;+=/#0-9A-Za-z]{1,2076}")
MAIL_RE = re.compile(r"[-_.0-9A-Za-z]{1,64}@[-_0-9A-Za-z]{1,255}[-_.0-9A-Za-z]{1,255}")
SPACE_RUN = re.compile(" {2,}")
NON_LATIN = re.compile("[^\u0000-\u02ff]")
ASCII_LETTERS_ETC = {cp: None for cp in range(ord("A"), ord("z") + 1)}  # langdetect's 'A' <= ch <= 'z'

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
        self._words: dict[str, tuple[tuple[int, ...], int]] = {}
        self._stream = _Stream(seed)

    def features(self, text: str) -> list[int]:
        """The n-gram ids langdetect would sample from for ``text``, in langdetect's order."""
        text = URL_RE.sub(" ", text)
        text = MAIL_RE.sub(" ", text)
        text = NGram.normalize_vi(text)
        text = SPACE_RUN.sub(" ", text[:MAX_TEXT_LENGTH])
        if not text.isascii():
            non_latin = len(NON_LATIN.findall(text))
            latin = len(text) - len(text.translate(ASCII_LETTERS_ETC))
            if latin * 2 < non_latin:
                text = text.translate(ASCII_LETTERS_ETC)
        words = text.translate(self._normal).split(" ")
        out: list[int] = []
        cache = self._words
        last = len(words) - 1
        for index, word in enumerate(words):
            if not word:
                continue
            entry = cache.get(word)
            if entry is None:
                entry = cache[word] = self._word_ngrams(word)
            grams, trailing = entry
            out.extend(grams if index < last else grams[: len(grams) - trailing])
        return out

    def _word_ngrams(self, word: str) -> tuple[tuple[int, ...], int]:
        """The n-gram ids of one word followed by a space, and how many of them end in that space."""
        ids = self._ids
        padded = " " + word + " "
        out: list[int] = []
        previous_upper = False
        trailing = 0
        for i in range(1, len(padded)):
            upper = padded[i].isupper()
            if upper and previous_upper:
                continue  # langdetect skips the rest of an all-capitals run
            previous_upper = upper
            for n in (1, 2, 3):
                if i + 1 < n:
                    break
                gram = padded[i + 1 - n : i + 1]
                if gram != " " and gram in ids:
                    out.append(ids[gram])
                    if i == len(padded) - 1:
                        trailing += 1
        return tuple(out), trailing

    def detect(self, texts: Iterable[str | None]) -> list[Detection]:
        """Detect the language of every text (None, empty and feature-less texts give lang None)."""
        texts = list(texts)
        results = [Detection(None, 0.0)] * len(texts)
        pending: list[tuple[int, list[int]]] = []
        for index, text in enumerate(texts):
            if text:
                grams = self.features(text)
                if grams:
                    pending.append((index, grams))
        for index, lang, prob in self._run(pending):
            results[index] = Detection(lang, prob)
        if len(self._words) > 2_000_000:
            self._words.clear()
        return results

    def _run(self, pending: Sequence[tuple[int, list[int]]]) -> Iterable[tuple[int, str | None, float]]:
        """Run langdetect's trials for all pending texts, ``batch`` of them in flight at a time."""
        n_langs = len(self.langs)
        stream = self._stream
        flat = np.fromiter((g for _, grams in pending for g in grams), dtype=np.int64)
        counts = np.fromiter((len(grams) for _, grams in pending), dtype=np.int64, count=len(pending))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        order = np.fromiter((i for i, _ in pending), dtype=np.int64, count=len(pending))
        shifts = np.asarray([32 - int(n).bit_length() for n in counts], dtype=np.uint64)

        slot_text = np.zeros(0, dtype=np.int64)  # index into pending
        pos = np.zeros(0, dtype=np.int64)
        trial = np.zeros(0, dtype=np.int64)
        step = np.zeros(0, dtype=np.int64)
        weight = np.zeros(0)
        cached = np.zeros(0)
        prob = np.zeros((0, n_langs))
        langprob = np.zeros((0, n_langs))
        next_text = 0
        uniform = 1.0 / n_langs
        while next_text < len(pending) or len(slot_text):
            room = self.batch - len(slot_text)
            if room > 0 and next_text < len(pending):
                new = np.arange(next_text, min(next_text + room, len(pending)))
                next_text += len(new)
                slot_text = np.concatenate([slot_text, new])
                pos = np.concatenate([pos, np.zeros(len(new), dtype=np.int64)])
                trial = np.concatenate([trial, np.zeros(len(new), dtype=np.int64)])
                step = np.concatenate([step, np.zeros(len(new), dtype=np.int64)])
                weight = np.concatenate([weight, np.zeros(len(new))])
                cached = np.concatenate([cached, np.zeros(len(new))])
                prob = np.concatenate([prob, np.full((len(new), n_langs), uniform)])
                langprob = np.concatenate([langprob, np.zeros((len(new), n_langs))])
                fresh = np.arange(len(slot_text) - len(new), len(slot_text))
                pos, weight, cached = self._start_trial(fresh, pos, trial, weight, cached)

            n = counts[slot_text].astype(np.uint64)
            shift = shifts[slot_text]
            stream.grow(int(pos.max()) + 64)
            words = stream.words
            r = words[pos] >> shift
            bad = np.flatnonzero(r >= n)
            while len(bad):
                pos[bad] += 1
                stream.grow(int(pos[bad].max()) + 64)
                words = stream.words
                r[bad] = words[pos[bad]] >> shift[bad]
                bad = bad[r[bad] >= n[bad]]
            pos += 1
            grams = flat[starts[slot_text] + r.astype(np.int64)]
            prob *= weight[:, None] + self._table[grams]

            check = np.flatnonzero(step % 5 == 0)
            step += 1
            if not len(check):
                continue
            sub = prob[check]
            total = np.cumsum(sub, axis=1)[:, -1]
            sub = sub / total[:, None]
            prob[check] = sub
            converged = (sub.max(axis=1) > CONV_THRESHOLD) | (step[check] - 1 >= ITERATION_LIMIT)
            ended = check[converged]
            if not len(ended):
                continue
            langprob[ended] += prob[ended] / N_TRIAL
            trial[ended] += 1
            done = ended[trial[ended] == N_TRIAL]
            going = ended[trial[ended] < N_TRIAL]
            if len(going):
                prob[going] = uniform
                step[going] = 0
                pos, weight, cached = self._start_trial(going, pos, trial, weight, cached)
            if len(done):
                for row in done:
                    scores = langprob[row]
                    best = int(np.argmax(scores))
                    top = float(scores[best])
                    lang = self.langs[best] if top > PROB_THRESHOLD else None
                    yield int(order[slot_text[row]]), lang, top
                keep = np.ones(len(slot_text), dtype=bool)
                keep[done] = False
                slot_text, pos, trial, step = slot_text[keep], pos[keep], trial[keep], step[keep]
                weight, cached, prob, langprob = weight[keep], cached[keep], prob[keep], langprob[keep]

    def _start_trial(self, rows, pos, trial, weight, cached):
        """Draw each starting trial's smoothing: an even trial draws a fresh Gaussian pair (four
        words) and keeps its second half for the odd trial after it, as ``random.gauss`` does."""
        stream = self._stream
        stream.grow(int(pos[rows].max()) + 8)
        even = rows[trial[rows] % 2 == 0]
        odd = rows[trial[rows] % 2 == 1]
        if len(even):
            at = pos[even]
            weight[even] = (ALPHA_DEFAULT + stream.gauss_cos[at] * ALPHA_WIDTH) / BASE_FREQ
            cached[even] = stream.gauss_sin[at]
            pos[even] += 4
        if len(odd):
            weight[odd] = (ALPHA_DEFAULT + cached[odd] * ALPHA_WIDTH) / BASE_FREQ
        return pos, weight, cached
