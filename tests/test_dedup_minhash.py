"""MinHash signatures: bit-identical to datasketch on real review texts, and loadable by it."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH
from datasketch.hashfunc import sha1_hash32 as ds_sha1_hash32

from recgpt_data.dedup import minhash
from recgpt_data.dedup.minhash import MERSENNE_PRIME, MinHasher, _bad_hashes, permutations, sha1_hash32, to_lean_minhash
from recgpt_data.dedup.normalize import normalize, shingle_spans, shingles, utf8_buffers
from recgpt_data.hashing import fnv1a64

SHA1_MESSAGES = [
    b"",
    b"a",
    b"great product",
    "\u00fcn\u00efcode \u00e9\u00e8 x y".encode(),
    b"x" * 55,
    b"y" * 56,
    b"z" * 64,
    b"w" * 119,
    b"v" * 120,
    bytes(range(256)) * 3,
]


@pytest.fixture(params=["kernel", "numpy"])
def engine(request, monkeypatch) -> str:
    """Runs a test once through the compiled kernels (every batch size) and once through numpy."""
    if request.param == "kernel":
        pytest.importorskip("numba")
        monkeypatch.setattr(minhash, "KERNEL_MIN_WORDS", 0)
    else:
        monkeypatch.setattr(minhash, "_kernel", None)
    return request.param


@pytest.fixture(scope="module")
def magazine_texts(shared) -> list[str | None]:
    path = shared / "amazon2018" / "Magazine_Subscriptions_5.json"
    return [json.loads(line).get("reviewText") for line in path.read_text(encoding="utf-8").splitlines()]


def test_shingles_follow_the_definition() -> None:
    assert shingles("Hello,  World! It costs 3.50 dollars", 5) == [
        b"hello world it costs 0",
        b"world it costs 0 dollars",
    ]
    assert shingles("Great product!", 5) == [b"great product"]
    assert shingles("\U0001f600\U0001f600 !!!", 5) == []
    assert shingles(None, 5) == []


def test_shingle_spans_equal_the_reference_on_real_reviews(magazine_texts) -> None:
    norm = normalize(pl.Series(magazine_texts[:400], dtype=pl.String))
    spans = shingle_spans(norm, 5)
    got: list[list[bytes]] = [[] for _ in range(400)]
    for start, length, doc in zip(spans.starts, spans.lengths, spans.doc):
        got[doc].append(bytes(spans.data[start : start + length]))
    assert got == [shingles(t, 5) for t in magazine_texts[:400]]


def test_permutations_are_datasketchs() -> None:
    a, b = permutations(128, 1)
    ref = MinHash(num_perm=128, seed=1, scheme="legacy").permutations
    assert np.array_equal(a, ref[0]) and np.array_equal(b, ref[1])


def test_vectorised_sha1_matches_datasketch_for_one_and_several_blocks() -> None:
    data = np.frombuffer(b"".join(SHA1_MESSAGES), dtype=np.uint8)
    lengths = np.array([len(m) for m in SHA1_MESSAGES])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    assert sha1_hash32(data, starts, lengths).tolist() == [ds_sha1_hash32(m) for m in SHA1_MESSAGES]


def test_compiled_sha1_matches_datasketch_across_lane_groups() -> None:
    kernel = pytest.importorskip("recgpt_data.dedup.minhash_kernel")
    rng = np.random.default_rng(0)
    sizes = rng.choice([0, 1, 3, 30, 55, 56, 63, 64, 119, 120, 200, 1000], size=2 * kernel.LANES + 7)
    messages = SHA1_MESSAGES + [rng.integers(0, 256, size=int(k), dtype=np.uint8).tobytes() for k in sizes]
    data = np.frombuffer(b"".join(messages), dtype=np.uint8)
    lengths = np.array([len(m) for m in messages])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    assert kernel.sha1_hash32(data, starts, lengths).tolist() == [ds_sha1_hash32(m) for m in messages]
    kernel.prepare()
    assert kernel.compiled()


def test_only_big_batches_compile_the_kernels(monkeypatch) -> None:
    kernel = pytest.importorskip("recgpt_data.dedup.minhash_kernel")
    monkeypatch.setattr(kernel, "compiled", lambda: False)
    monkeypatch.setattr(minhash, "KERNEL_MIN_WORDS", 6)
    big, small = pl.Series(["one two three", "four five six"]), pl.Series(["one two three", "four five"])
    assert minhash._use_kernel(big) and not minhash._use_kernel(small)
    monkeypatch.setattr(kernel, "compiled", lambda: True)
    assert minhash._use_kernel(small)
    monkeypatch.setattr(minhash, "_kernel", None)
    assert not minhash._use_kernel(big)


def test_compiled_fnv1a64_gives_the_project_hashes(magazine_texts) -> None:
    """The shuffle's compiled FNV-1a 64 equals :func:`recgpt_data.hashing.fnv1a64` on real reviews
    (accents, emoji) and the published test vectors."""
    kernel = pytest.importorskip("recgpt_data.dedup.minhash_kernel")
    texts = pl.Series(["", "a", "foobar", "\u00fcn\u00efcode \U0001f600", *magazine_texts[:500]], dtype=pl.String)
    texts = texts.fill_null("")
    got = kernel.fnv1a64(*utf8_buffers(texts))
    assert got[:3].tolist() == [0xCBF29CE484222325, 0xAF63DC4C8601EC8C, 0x85944171F73967E8]
    assert got.tolist() == fnv1a64(texts).to_list()


def test_kernels_compile_without_a_writable_cache_folder(tmp_path) -> None:
    """Where numba finds no writable folder to cache in (``NUMBA_CACHE_DIR``, ``__pycache__`` beside
    the module, the user's cache folder: none can be made here, even by root), ``cache=True`` would
    fail the import; the module warns once and compiles in the process (its smallest kernel here),
    giving the same hashes."""
    kernel = pytest.importorskip("recgpt_data.dedup.minhash_kernel")
    folder = tmp_path / "module"
    folder.mkdir()
    shutil.copy(kernel.__file__, folder / "minhash_kernel.py")  # it imports only numpy and numba
    (folder / "__pycache__").write_text("a file where numba would make a folder")
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    script = (
        "import numpy as np, minhash_kernel as k; "
        "print(k.CACHE, *k.fnv1a64(np.frombuffer(b'afoobar', np.uint8).copy(), np.array([0, 1, 7])))"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(blocked), "XDG_CACHE_HOME": str(blocked / "cache")}
    env["NUMBA_CACHE_DIR"] = str(blocked / "numba")
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    fnv_a, fnv_foobar = 0xAF63DC4C8601EC8C, 0x85944171F73967E8  # FNV's published test vectors
    assert done.stdout.split() == ["False", str(fnv_a), str(fnv_foobar)]
    assert done.stderr.count("the MinHash kernels compile in each process") == 1
    assert not any(Path(folder).rglob("*.nbi"))


def test_compiled_shingle_spans_equal_the_vectorised_ones(magazine_texts) -> None:
    kernel = pytest.importorskip("recgpt_data.dedup.minhash_kernel")
    norm = normalize(pl.Series([None, "", "a b", "\U0001f600", *magazine_texts[:300]], dtype=pl.String))
    for texts, ngram in [(norm, 1), (norm, 3), (norm, 5), (norm.slice(2), 5)]:
        spans = shingle_spans(texts, ngram)
        starts, lengths, doc = kernel.shingle_spans(*utf8_buffers(texts), ngram)
        assert starts.tolist() == spans.starts.tolist()
        assert lengths.tolist() == spans.lengths.tolist()
        assert doc.tolist() == spans.doc.tolist()


def test_signatures_are_bit_identical_to_datasketch_on_real_reviews(magazine_texts, engine) -> None:
    ours = MinHasher(num_perm=128, seed=1, ngram=5).signatures(pl.Series(magazine_texts, dtype=pl.String))
    ref = MinHash.bulk([shingles(t, 5) for t in magazine_texts], num_perm=128, seed=1, scheme="legacy")
    assert ours.shape == (2375, 128)
    assert np.array_equal(ours, np.array([m.hashvalues for m in ref]))


def test_other_seed_and_size_are_bit_identical_too(magazine_texts, engine) -> None:
    texts = magazine_texts[:300]
    ours = MinHasher(num_perm=64, seed=7, ngram=3).signatures(pl.Series(texts, dtype=pl.String))
    ref = MinHash.bulk([shingles(t, 3) for t in texts], num_perm=64, seed=7, scheme="legacy")
    assert np.array_equal(ours, np.array([m.hashvalues for m in ref]))


def test_signatures_load_as_lean_minhash_and_query_minhashlsh(magazine_texts) -> None:
    texts = [t for t in magazine_texts if t and len(t.split()) > 150][:50]
    planted = texts[0].split()
    planted[10] = "zebra"
    hasher = MinHasher()
    sig = hasher.signatures(pl.Series(texts + [" ".join(planted)], dtype=pl.String))
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    for k in range(len(texts)):
        lsh.insert(f"doc{k}", to_lean_minhash(sig[k], seed=1))
    query = to_lean_minhash(sig[-1], seed=1)
    assert isinstance(query, LeanMinHash)
    assert lsh.query(query) == ["doc0"]
    reference = MinHash(num_perm=128, seed=1, scheme="legacy")
    reference.update_batch(shingles(" ".join(planted), 5))
    assert query.jaccard(LeanMinHash(reference)) == 1.0


def test_bad_hashes_are_exactly_where_the_fast_reduction_is_off() -> None:
    a = np.array([1, 3], dtype=np.uint64)
    b = np.array([MERSENNE_PRIME - 5, 12345], dtype=np.uint64)
    bad = _bad_hashes(a, b)
    assert 5 in bad.tolist()
    for h in bad.tolist():
        exact = [((int(ak) * h + int(bk)) % (1 << 64)) % MERSENNE_PRIME & 0xFFFFFFFF for ak, bk in zip(a, b)]
        fast = [
            (((int(ak) * h + int(bk)) % (1 << 64)) + (((int(ak) * h + int(bk)) % (1 << 64)) >> 61)) & 0xFFFFFFFF
            for ak, bk in zip(a, b)
        ]
        assert exact != fast
    assert len(_bad_hashes(*permutations(128, 1))) == 0


def test_empty_and_huge_texts_do_not_break_the_batch(engine) -> None:
    huge = " ".join(f"w{k % 997}" for k in range(40_000))
    assert len(shingles(huge, 5)) > minhash._SHA1_CHUNK  # more shingles than one SHA-1 pass takes
    texts = [None, "", "\U0001f600", "\ufffd\ufffd", huge, "Great product!"]
    ours = MinHasher().signatures(pl.Series(texts, dtype=pl.String))
    assert (ours[:4] == 0xFFFFFFFF).all()
    big = MinHash(num_perm=128, seed=1, scheme="legacy")
    big.update_batch(shingles(huge, 5))
    assert np.array_equal(ours[4], big.hashvalues)
    short = MinHash(num_perm=128, seed=1, scheme="legacy")
    short.update(b"great product")
    assert np.array_equal(ours[5], short.hashvalues)
    assert struct.unpack("<I", hashlib.sha1(b"great product").digest()[:4])[0] == ds_sha1_hash32(b"great product")


def test_texts_holding_a_bad_hash_take_the_exact_path(engine) -> None:
    h0 = ds_sha1_hash32(b"great product")
    hasher = MinHasher(num_perm=2, seed=1)
    hasher.a = np.array([1, 3], dtype=np.uint64)
    hasher.b = np.array([MERSENNE_PRIME - h0, 99], dtype=np.uint64)
    hasher._bad = _bad_hashes(hasher.a, hasher.b)
    sig = hasher.signatures(pl.Series(["Great product!", "great product. Really great product, I say"]))
    expected = [
        [
            min(((int(a) * ds_sha1_hash32(s) + int(b)) % (1 << 64)) % MERSENNE_PRIME & 0xFFFFFFFF for s in shingles(t))
            for a, b in zip(hasher.a, hasher.b, strict=True)
        ]
        for t in ["Great product!", "great product. Really great product, I say"]
    ]
    assert sig.tolist() == expected
    assert sig[0, 0] == 0
