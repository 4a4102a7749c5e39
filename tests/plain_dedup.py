"""dedup's rules re-stated in plain Python, for counts independent of the library."""

from __future__ import annotations

import collections
import re


def plain_normalize(text: str) -> str:
    """The text normalisation dedup compares with, re-stated with Python's re."""
    text = re.sub(r"\d+(?:[.,]\d+)?", "0", text.lower())
    return " ".join(re.sub(r"[^\w\s]|_", " ", text).split())


def copies_on_one_item(raw: list[dict]) -> int:
    """Amazon review records that repeat an earlier one's user, text, rating, time and ASIN: the
    variant copies dedup drops where items carry no titles."""
    groups = collections.Counter(
        (r["reviewerID"], t, r["overall"], r["unixReviewTime"], r["asin"])
        for r in raw
        if (t := plain_normalize(r.get("reviewText") or ""))
    )
    return sum(n - 1 for n in groups.values())
