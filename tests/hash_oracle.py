"""The documented draw rule written out by hand in plain Python integers, independent of
:mod:`recgpt_data.hashing`: FNV-1a 64 of the UTF-8 bytes, finished by MurmurHash3's ``fmix64``,
and the top 53 bits over ``2**53`` as a number in ``[0, 1)``."""

from __future__ import annotations

MASK = (1 << 64) - 1


def fnv1a64(text: str) -> int:
    """FNV-1a 64 of ``text``'s UTF-8 bytes."""
    value = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        value = ((value ^ byte) * 0x100000001B3) & MASK
    return value


def fmix64(value: int) -> int:
    """MurmurHash3's 64-bit finalizer."""
    value ^= value >> 33
    value = (value * 0xFF51AFD7ED558CCD) & MASK
    value ^= value >> 33
    value = (value * 0xC4CEB9FE1A85EC53) & MASK
    return value ^ (value >> 33)


def mixed64(text: str, seed: int = 0) -> int:
    """The seeded 64-bit hash of ``text``: ``<seed><US>`` prefixed when the seed is non-zero."""
    return fmix64(fnv1a64(f"{seed}\x1f{text}" if seed else text))


def draw(text: str, seed: int = 0) -> float:
    """The seeded draw in ``[0, 1)`` of ``text``: the top 53 bits of :func:`mixed64`."""
    return (mixed64(text, seed) >> 11) / float(1 << 53)


def old_draw(text: str, seed: int = 0) -> float:
    """The former rule, the top 53 bits of FNV-1a alone, kept to show what the mix fixes."""
    return (fnv1a64(f"{seed}\x1f{text}" if seed else text) >> 11) / float(1 << 53)
