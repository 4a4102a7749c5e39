"""Compiled MinHash kernels (numba): SHA-1 of many shingles side by side, then the permuted minimum.

Importing this module needs numba; :mod:`recgpt_data.dedup.minhash` falls back to its numpy code
where numba is missing. The kernels are compiled on first use or by :func:`prepare` (a few CPU
seconds) and cached on disk by numba (in ``NUMBA_CACHE_DIR`` where set, else in ``__pycache__``
beside this file, else in the user's cache folder: the first of them that is writable), so a later
process loads them in a fraction of a second. Where none is writable, numba refuses to cache at all
(its ``cache=True`` fails the import); the kernels are then compiled in each process, with a
warning, instead. They release the GIL, so batches can run in threads.

:func:`fnv1a64` is here too: the shuffle hashes every distinct text once, which numpy's
byte-position loop (:func:`recgpt_data.hashing.fnv1a64`) does a column at a time.

SHA-1 runs on up to ``LANES`` messages at once: every SHA-1 variable is an array with one 32-bit
word per message, so each step of the 80 rounds is one loop the compiler turns into SIMD
instructions, over arrays that stay in the L1 cache. Messages of one 64-byte block (up to 55
bytes, nearly every shingle) are hashed first; longer ones are then hashed in groups of similar
length, where a message that has run out of blocks keeps its state.

Inside the rounds, ``c``, ``d`` and ``e`` are stored rotated right by 30 bits and rotated back
when read, so that each round writes one array: the rotation of ``b`` happens on reading instead
of on writing.

The permutation ``((a*h + b) mod 2**64) mod (2**61 - 1)`` is reduced exactly with a shift, a mask
and one conditional subtraction, so no hash needs a second, slower path.
"""

from __future__ import annotations

import warnings

import numpy as np
from numba import njit

LANES = 512  # messages hashed side by side: the fastest of 128 to 2,048 (42 KiB of working arrays)
SHORT = 55  # longest message that pads into one 64-byte block

_MASK32 = np.uint64(0xFFFFFFFF)
_PRIME = np.uint64((1 << 61) - 1)
_S32 = np.uint64(32)
_S61 = np.uint64(61)
_K = np.array([0x5A827999, 0x6ED9EBA1, 0x8F1BBCDC, 0xCA62C1D6], dtype=np.uint32)
_INIT = np.array([0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0], dtype=np.uint32)


def _cache_found() -> bool:
    """Whether numba finds a writable folder to cache this module's kernels in: it looks for one
    as a function with ``cache=True`` is defined (compiling nothing), and raises where there is none."""
    try:
        njit(cache=True)(_cache_found)
    except RuntimeError as exc:  # numba's "cannot cache function ...: no locator available"
        warnings.warn(f"{exc}: the MinHash kernels compile in each process (a few CPU seconds)", stacklevel=2)
        return False
    return True


CACHE = _cache_found()  # numba's cache=True: the compiled kernels on disk, where a folder is writable


@njit(nogil=True, cache=CACHE)
def _rotl(x, n):
    """32-bit ``x`` rotated left by ``n`` bits."""
    return np.uint32((x << np.uint32(n)) | (x >> np.uint32(32 - n)))


@njit(nogil=True, cache=CACHE)
def _bswap(x):
    """32-bit ``x`` with its bytes reversed."""
    return np.uint32(
        (x >> np.uint32(24))
        | ((x >> np.uint32(8)) & np.uint32(0xFF00))
        | ((x << np.uint32(8)) & np.uint32(0xFF0000))
        | (x << np.uint32(24))
    )


@njit(nogil=True, cache=CACHE)
def _byte(data, p):
    """``data[p]`` as a 32-bit word (``p`` is never negative: unsigned indexing skips that check)."""
    return np.uint32(data[np.uint64(p)])


@njit(nogil=True, inline="always", cache=CACHE)
def _load_block(data, start, length, block, w, lane):
    """Big-endian words of padded block ``block`` of one message into column ``lane`` of ``w``.

    ``w`` must hold zeros in that column: only the message bytes, the 0x80 terminator and, in the
    last block, the bit length are written.
    """
    first = start + 64 * block
    left = length - 64 * block  # message bytes from this block's first byte on
    for i in range(min(max(left, 0) // 4, 16)):
        p = first + 4 * i
        w[i, lane] = (
            (_byte(data, p) << np.uint32(24))
            | (_byte(data, p + 1) << np.uint32(16))
            | (_byte(data, p + 2) << np.uint32(8))
            | _byte(data, p + 3)
        )
    if 0 <= left < 64:
        i, tail = left // 4, left % 4
        word = np.uint32(0x80) << np.uint32(24 - 8 * tail)
        for j in range(tail):
            word |= _byte(data, first + 4 * i + j) << np.uint32(24 - 8 * j)
        w[i, lane] = word
    if block == (length + 8) // 64:
        bits = np.uint64(length) * np.uint64(8)
        w[14, lane] = np.uint32(bits >> _S32)
        w[15, lane] = np.uint32(bits & _MASK32)


@njit(nogil=True, cache=CACHE)
def _compress(w, state, live, work, n):
    """One SHA-1 block for lanes ``:n``: ``state`` (5, LANES) advances where ``live`` is set."""
    for v in range(5):
        for lane in range(n):
            work[v, lane] = state[v, lane] if v < 2 else _rotl(state[v, lane], 2)
    a, b, c, d, e = work[0], work[1], work[2], work[3], work[4]
    for t in range(80):
        wt = w[t & 15]
        if t >= 16:
            w3, w8, w14 = w[(t - 3) & 15], w[(t - 8) & 15], w[(t - 14) & 15]
            for lane in range(n):
                wt[lane] = _rotl(wt[lane] ^ w3[lane] ^ w8[lane] ^ w14[lane], 1)
        k = _K[t // 20]
        if t < 20:
            for lane in range(n):
                x, y = _rotl(c[lane], 30), _rotl(d[lane], 30)
                f = ((x ^ y) & b[lane]) ^ y
                e[lane] = np.uint32(_rotl(e[lane], 30) + f + k + wt[lane] + _rotl(a[lane], 5))
        elif 40 <= t < 60:
            for lane in range(n):
                x, y = _rotl(c[lane], 30), _rotl(d[lane], 30)
                f = ((b[lane] | x) & y) | (b[lane] & x)
                e[lane] = np.uint32(_rotl(e[lane], 30) + f + k + wt[lane] + _rotl(a[lane], 5))
        else:
            for lane in range(n):
                x, y = _rotl(c[lane], 30), _rotl(d[lane], 30)
                f = b[lane] ^ x ^ y
                e[lane] = np.uint32(_rotl(e[lane], 30) + f + k + wt[lane] + _rotl(a[lane], 5))
        a, b, c, d, e = e, a, b, c, d
    for v in range(5):
        for lane in range(n):
            x = work[v, lane] if v < 2 else _rotl(work[v, lane], 30)
            state[v, lane] = np.uint32(state[v, lane] + x) if live[lane] else state[v, lane]


@njit(nogil=True, inline="always", cache=CACHE)
def _start(n, w, state, live):
    """Lanes ``:n`` set to SHA-1's initial state, all live, with zero message words."""
    for v in range(5):
        state[v, :n] = _INIT[v]
    for i in range(16):
        w[i, :n] = 0
    live[:n] = True


@njit(nogil=True, inline="always", cache=CACHE)
def _finish(state, group, n, out):
    """The first digest word of lanes ``:n``, little-endian, written to ``out[group[:n]]``."""
    for lane in range(n):
        out[group[lane]] = _bswap(state[0, lane])


@njit(nogil=True, cache=CACHE)
def _hash_short(data, starts, lengths, group, n, out, w, state, live, work):
    """datasketch's ``sha1_hash32`` of the one-block messages ``group[:n]``, written to ``out``."""
    _start(n, w, state, live)
    for lane in range(n):
        i = group[lane]
        _load_block(data, starts[i], lengths[i], 0, w, lane)
    _compress(w, state, live, work, n)
    _finish(state, group, n, out)


@njit(nogil=True, cache=CACHE)
def _hash_long(data, starts, lengths, group, n, out, w, state, live, work):
    """datasketch's ``sha1_hash32`` of the messages ``group[:n]``, of any number of blocks."""
    _start(n, w, state, live)
    blocks = 0
    for lane in range(n):
        blocks = max(blocks, (lengths[group[lane]] + 8) // 64 + 1)
    for block in range(blocks):
        for lane in range(n):
            i = group[lane]
            live[lane] = block <= (lengths[i] + 8) // 64
            if live[lane]:
                _load_block(data, starts[i], lengths[i], block, w, lane)
        _compress(w, state, live, work, n)
        for i in range(16):
            w[i, :n] = 0
    _finish(state, group, n, out)


@njit(nogil=True, cache=CACHE)
def _sha1_hash32(data, starts, lengths, long_by_length):
    """``sha1_hash32`` of every message; ``long_by_length`` lists those over ``SHORT`` bytes."""
    out = np.empty(len(starts), dtype=np.uint32)
    w = np.empty((16, LANES), dtype=np.uint32)
    state = np.empty((5, LANES), dtype=np.uint32)
    work = np.empty((5, LANES), dtype=np.uint32)
    live = np.empty(LANES, dtype=np.bool_)
    group = np.empty(LANES, dtype=np.int64)
    n = 0
    for i in range(len(starts)):
        if lengths[i] <= SHORT:
            group[n] = i
            n += 1
            if n == LANES:
                _hash_short(data, starts, lengths, group, n, out, w, state, live, work)
                n = 0
    if n:
        _hash_short(data, starts, lengths, group, n, out, w, state, live, work)
    for lo in range(0, len(long_by_length), LANES):
        n = min(LANES, len(long_by_length) - lo)
        group[:n] = long_by_length[lo : lo + n]
        _hash_long(data, starts, lengths, group, n, out, w, state, live, work)
    return out


def sha1_hash32(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """datasketch's ``sha1_hash32`` of each byte range ``data[start:start+length]``, as uint32.

    Long messages are hashed in order of length, so that lanes of a group run out of blocks
    together.
    """
    data, starts, lengths = _readonly(data, np.uint8), _readonly(starts, np.int64), _readonly(lengths, np.int64)
    long_ = np.flatnonzero(lengths > SHORT)
    return _sha1_hash32(data, starts, lengths, long_[np.argsort(lengths[long_], kind="stable")])


@njit(nogil=True, cache=CACHE)
def _permuted_min(hashes, doc, a, b, out):
    """Fold every shingle's permuted hashes into its text's row of ``out`` (texts, num_perm)."""
    for i in range(len(hashes)):
        h = np.uint64(hashes[i])
        d = doc[i]
        for j in range(len(a)):
            x = a[j] * h + b[j]
            r = (x & _PRIME) + (x >> _S61)
            if r >= _PRIME:
                r -= _PRIME
            v = np.uint32(r & _MASK32)
            if v < out[d, j]:
                out[d, j] = v


@njit(nogil=True, cache=CACHE)
def _shingle_spans(data, offsets, ngram):
    """Byte starts, lengths and text of every shingle of normalised texts ``data[offsets[d]:offsets[d+1]]``.

    The same shingles as :func:`recgpt_data.dedup.normalize.shingle_spans`, found in one scan of
    the bytes: ``ring`` holds the starts of the last ``ngram`` words.
    """
    texts = len(offsets) - 1
    total = 0
    for d in range(texts):
        words = 1
        for p in range(offsets[d], offsets[d + 1]):
            words += data[p] == 32
        if offsets[d + 1] > offsets[d]:
            total += words - ngram + 1 if words >= ngram else 1
    starts = np.empty(total, dtype=np.int64)
    lengths = np.empty(total, dtype=np.int64)
    doc = np.empty(total, dtype=np.int64)
    ring = np.empty(ngram, dtype=np.int64)
    k = 0
    for d in range(texts):
        lo, hi = offsets[d], offsets[d + 1]
        if hi == lo:
            continue
        ring[0] = lo
        words = 1
        for p in range(lo, hi + 1):
            if p < hi and data[p] != 32:
                continue
            if words >= ngram:
                first = ring[(words - ngram) % ngram]
                starts[k], lengths[k], doc[k] = first, p - first, d
                k += 1
            if p < hi:
                ring[words % ngram] = p + 1
                words += 1
        if words < ngram:
            starts[k], lengths[k], doc[k] = lo, hi - lo, d
            k += 1
    return starts, lengths, doc


def shingle_spans(data: np.ndarray, offsets: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Starts, lengths and text index of the shingles of the texts ``data[offsets[d]:offsets[d+1]]``."""
    return _shingle_spans(_readonly(data, np.uint8), _readonly(offsets, np.int64), ngram)


def signatures(data: np.ndarray, offsets: np.ndarray, ngram: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash signatures, shape ``(texts, len(a))`` uint32, of the normalised texts given as UTF-8.

    Text ``d`` is ``data[offsets[d]:offsets[d+1]]``; a text without shingles keeps ``2**32 - 1``
    everywhere.
    """
    starts, lengths, doc = shingle_spans(data, offsets, ngram)
    hashes = sha1_hash32(data, starts, lengths)
    out = np.full((len(offsets) - 1, len(a)), 0xFFFFFFFF, dtype=np.uint32)
    _permuted_min(hashes, doc, _readonly(a, np.uint64), _readonly(b, np.uint64), out)
    return out


def _readonly(values: np.ndarray, dtype: type) -> np.ndarray:
    """``values`` as a read-only contiguous array: one compiled variant serves every caller."""
    view = np.ascontiguousarray(values, dtype=dtype).view()
    view.flags.writeable = False
    return view


@njit(nogil=True, cache=CACHE)
def _fnv1a64(data, offsets):
    out = np.empty(len(offsets) - 1, dtype=np.uint64)
    for d in range(len(offsets) - 1):
        h = np.uint64(0xCBF29CE484222325)
        for p in range(offsets[d], offsets[d + 1]):
            h = (h ^ np.uint64(data[p])) * np.uint64(0x100000001B3)
        out[d] = h
    return out


def fnv1a64(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """FNV-1a 64 of each string ``data[offsets[d]:offsets[d+1]]`` (UTF-8 bytes): the same numbers
    as :func:`recgpt_data.hashing.fnv1a64`."""
    return _fnv1a64(_readonly(data, np.uint8), _readonly(offsets, np.int64))


def compiled() -> bool:
    """Whether the kernels are compiled in this process."""
    return all(kernel.signatures for kernel in (_shingle_spans, _sha1_hash32, _permuted_min))


def prepare() -> None:
    """Compile the kernels now rather than on first use."""
    signatures(np.zeros(0, np.uint8), np.zeros(1, np.int64), 1, np.ones(1, np.uint64), np.zeros(1, np.uint64))
