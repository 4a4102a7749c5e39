"""MinHash signatures of many texts at once, bit-identical to ``datasketch.MinHash``.

datasketch's legacy scheme (``scheme="legacy"``, its only scheme before 2.0) hashes each shingle
with ``sha1_hash32`` (the first four bytes of SHA-1, little-endian) and maps every hash ``h``
through ``num_perm`` permutations ``((a * h + b) mod 2**64) mod (2**61 - 1)``, keeping the low 32
bits; ``a`` and ``b`` come from ``np.random.RandomState(seed)``. A signature is the minimum of
each permutation over the text's shingles; a text without shingles keeps ``2**32 - 1``
everywhere, as an empty ``MinHash`` does.

Here the same numbers come from all shingles of a batch at once. Where numba is installed, a
big batch (``KERNEL_MIN_WORDS`` words or more, enough to pay for compiling) or any batch
once the kernels are compiled runs through :mod:`recgpt_data.dedup.minhash_kernel`. Otherwise
array arithmetic does it: SHA-1 runs as 80 rounds of numpy operations over thousands of shingles
at once, and the Mersenne reduction is done with shifts and adds instead of a division. Both give
the same signatures. Load a row with :func:`to_lean_minhash` to query a ``datasketch.MinHashLSH``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import polars as pl
from datasketch import LeanMinHash

from recgpt_data.dedup.normalize import normalize, shingle_spans, utf8_buffers, word_counts

try:
    from recgpt_data.dedup import minhash_kernel as _kernel
except ImportError:  # numba is not installed: the numpy code below does all the work
    _kernel = None

MERSENNE_PRIME = (1 << 61) - 1
MAX_HASH = (1 << 32) - 1
SCHEME = "legacy"

_U32 = np.uint32
_SHA1_INIT = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0)
_SHA1_K = (0x5A827999, 0x6ED9EBA1, 0x8F1BBCDC, 0xCA62C1D6)
_SHA1_CHUNK = 32768  # messages per SHA-1 pass: fewer numpy calls per message, arrays still cache-sized
_PERM_BLOCK = 4096  # shingles per permutation block: amortises the per-block segment bookkeeping
# Compiling the kernels takes about 6 CPU seconds (once per machine: numba caches them on disk) and
# then saves about 300 ns per shingle (about one per word): a batch of fewer words uses numpy unless
# they are loaded already, so small jobs never compile.
KERNEL_MIN_WORDS = 1 << 20


def permutations(num_perm: int = 128, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The ``(a, b)`` permutation parameters datasketch draws for ``num_perm`` and ``seed``."""
    gen = np.random.RandomState(seed)
    pairs = [
        (gen.randint(1, MERSENNE_PRIME, dtype=np.uint64), gen.randint(0, MERSENNE_PRIME, dtype=np.uint64))
        for _ in range(num_perm)
    ]
    a, b = np.array(pairs, dtype=np.uint64).reshape(num_perm, 2).T
    return np.ascontiguousarray(a), np.ascontiguousarray(b)


def _message_words(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, blocks: int) -> np.ndarray:
    """SHA-1 padded messages as big-endian 32-bit words, shape ``(len(starts), 16 * blocks)``.

    ``data`` must end with at least ``64 * blocks`` spare bytes, so every window can be read whole.
    """
    m = len(starts)
    width = 64 * blocks
    windows = np.lib.stride_tricks.as_strided(data, shape=(len(data) - width + 1, width), strides=(1, 1))
    padded = windows[starts]
    inside = np.arange(width, dtype=np.int32)[None, :] < lengths.astype(np.int32)[:, None]
    np.multiply(padded, inside, out=padded, casting="unsafe")
    padded[np.arange(m), lengths] = 0x80
    padded[:, width - 8 :] = (lengths * 8).astype(">u8").view(np.uint8).reshape(m, 8)
    return padded.view(">u4").astype(_U32)


def _sha1_first_word(words: np.ndarray) -> np.ndarray:
    """SHA-1 of each row of padded message words; returns the first four digest bytes, little-endian."""
    m = words.shape[0]
    state = [np.full(m, v, _U32) for v in _SHA1_INIT]
    tmp = np.empty(m, _U32)
    tmp2 = np.empty(m, _U32)
    for block in range(words.shape[1] // 16):
        w = [np.ascontiguousarray(words[:, block * 16 + i]) for i in range(16)]
        a, b, c, d, e = (s.copy() for s in state)
        for t in range(80):
            wt = w[t % 16]
            if t >= 16:
                wt ^= w[(t - 3) % 16]
                wt ^= w[(t - 8) % 16]
                wt ^= w[(t - 14) % 16]
                np.left_shift(wt, _U32(1), out=tmp)
                wt >>= _U32(31)
                wt |= tmp
            if t < 20:
                np.bitwise_xor(c, d, out=tmp)
                tmp &= b
                tmp ^= d
            elif 40 <= t < 60:
                np.bitwise_or(b, c, out=tmp)
                tmp &= d
                np.bitwise_and(b, c, out=tmp2)
                tmp |= tmp2
            else:
                np.bitwise_xor(b, c, out=tmp)
                tmp ^= d
            e += tmp
            e += wt
            e += _U32(_SHA1_K[t // 20])
            np.left_shift(a, _U32(5), out=tmp)
            e += tmp
            np.right_shift(a, _U32(27), out=tmp)
            e += tmp
            np.left_shift(b, _U32(30), out=tmp)
            b >>= _U32(2)
            b |= tmp
            a, b, c, d, e = e, a, b, c, d
        for s, v in zip(state, (a, b, c, d, e)):
            s += v
    return state[0].byteswap()


def sha1_hash32(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """datasketch's ``sha1_hash32`` of each byte range ``data[start:start+length]``, as uint32."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    blocks = (lengths + 8) // 64 + 1
    spare = 64 * int(blocks.max()) if len(blocks) else 64
    data = np.concatenate([np.asarray(data, dtype=np.uint8), np.zeros(spare, np.uint8)])
    out = np.empty(len(starts), dtype=_U32)
    for nb in np.unique(blocks):
        idx = np.flatnonzero(blocks == nb)
        for lo in range(0, len(idx), _SHA1_CHUNK):
            part = idx[lo : lo + _SHA1_CHUNK]
            out[part] = _sha1_first_word(_message_words(data, starts[part], lengths[part], int(nb)))
    return out


def _use_kernel(norm: pl.Series) -> bool:
    """Whether a batch of normalised texts goes through the compiled kernels."""
    if _kernel is None or _kernel.compiled():
        return _kernel is not None
    return int(word_counts(norm).sum()) >= KERNEL_MIN_WORDS


def _bad_hashes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 32-bit hashes for which the fast Mersenne reduction of some permutation is off by one.

    ``x mod p`` is computed as ``(x & p) + (x >> 61)``; that is exact unless the sum reaches ``p``,
    i.e. unless ``x = a*h + b mod 2**64`` is one of 36 values. Solving ``a*h + b = x`` for each of
    them gives every such ``h`` below ``2**32`` (almost always none); texts holding one of these
    hashes are recomputed the slow, exact way.
    """
    found = set()
    for ak, bk in zip(a.tolist(), b.tolist()):
        twos = (ak & -ak).bit_length() - 1
        modulus = 1 << (64 - twos)
        inverse = pow(ak >> twos, -1, modulus)
        for top in range(8):
            for low in range(MERSENNE_PRIME - top, MERSENNE_PRIME + 1):
                target = ((top << 61) | low) - bk
                if target % (1 << twos):
                    continue
                h = ((target % (1 << 64)) >> twos) * inverse % modulus
                while h < (1 << 32):
                    found.add(h)
                    h += modulus
    return np.array(sorted(found), dtype=_U32)


class MinHasher:
    """Computes datasketch-compatible MinHash signatures for batches of texts."""

    def __init__(self, num_perm: int = 128, seed: int = 1, ngram: int = 5) -> None:
        if num_perm < 1:
            raise ValueError("num_perm must be positive")
        if ngram < 1:
            raise ValueError("ngram must be positive")
        self.num_perm = num_perm
        self.seed = seed
        self.ngram = ngram
        self.a, self.b = permutations(num_perm, seed)
        self._bad = _bad_hashes(self.a, self.b)

    def _permuted_min(self, hashes: np.ndarray, doc: np.ndarray, out: np.ndarray) -> None:
        """Fold each shingle hash's permutations into its text's column of ``out`` (num_perm, texts).

        ``(x & p) + (x >> 61)`` has the low 32 bits of ``x + (x >> 61)``, so two operations replace
        the modulo; the rare hashes where that is off by one are handled by the caller.
        """
        a, b = self.a[:, None], self.b[:, None]
        x = np.empty((self.num_perm, _PERM_BLOCK), np.uint64)
        top = np.empty((self.num_perm, _PERM_BLOCK), np.uint64)
        low = np.empty((self.num_perm, _PERM_BLOCK), _U32)
        shift = np.uint64(61)
        for lo in range(0, len(hashes), _PERM_BLOCK):
            h = hashes[None, lo : lo + _PERM_BLOCK].astype(np.uint64)
            m = h.shape[1]
            xb, tb, lb = x[:, :m], top[:, :m], low[:, :m]
            np.multiply(a, h, out=xb)
            xb += b
            np.right_shift(xb, shift, out=tb)
            xb += tb
            np.copyto(lb, xb, casting="unsafe")
            d = doc[lo : lo + m]
            seg = np.flatnonzero(np.concatenate([[True], d[1:] != d[:-1]]))
            mins = np.minimum.reduceat(lb, seg, axis=1)
            cols = d[seg]
            np.minimum(out[:, cols], mins, out=mins)
            out[:, cols] = mins

    def _exact_rows(self, hashes: np.ndarray) -> np.ndarray:
        """The exact permutation values of ``hashes`` (datasketch's own arithmetic)."""
        phv = (hashes.astype(np.uint64)[:, None] * self.a + self.b) % np.uint64(MERSENNE_PRIME)
        return (phv & np.uint64(MAX_HASH)).astype(_U32)

    def signatures_of_normalized(self, norm: pl.Series) -> np.ndarray:
        """Signatures, shape ``(len(norm), num_perm)`` uint32, of already-normalised texts."""
        if _use_kernel(norm):
            data, offsets = utf8_buffers(norm)
            return _kernel.signatures(data, offsets, self.ngram, self.a, self.b)
        spans = shingle_spans(norm, self.ngram)
        hashes = sha1_hash32(spans.data, spans.starts, spans.lengths)
        columns = np.full((self.num_perm, len(norm)), MAX_HASH, dtype=_U32)
        self._permuted_min(hashes, spans.doc, columns)
        out = np.ascontiguousarray(columns.T)
        if len(self._bad):
            hit = np.isin(hashes, self._bad)
            for d in np.unique(spans.doc[hit]):
                out[d] = self._exact_rows(hashes[spans.doc == d]).min(axis=0)
        return out

    def signatures(self, texts: pl.Series | Iterable[str | None]) -> np.ndarray:
        """Signatures of raw texts; identical normalised texts are hashed once."""
        series = texts if isinstance(texts, pl.Series) else pl.Series(list(texts), dtype=pl.String)
        frame = pl.DataFrame({"norm": normalize(series).fill_null("")})
        unique = frame.unique(subset="norm", maintain_order=True).with_row_index("u")
        index = frame.join(unique, on="norm", how="left", maintain_order="left")["u"].to_numpy()
        return self.signatures_of_normalized(unique["norm"])[index]

    def signature_batches(self, batches: Iterable[pl.Series]) -> Iterator[np.ndarray]:
        """Signatures of a stream of text batches, one array per batch, holding one batch at a time."""
        for batch in batches:
            yield self.signatures(batch)


def to_lean_minhash(hashvalues: np.ndarray, seed: int = 1) -> LeanMinHash:
    """A ``datasketch.LeanMinHash`` holding one signature row, ready for ``MinHashLSH``."""
    return LeanMinHash(seed=seed, hashvalues=np.asarray(hashvalues, dtype=np.uint64), scheme=SCHEME)
