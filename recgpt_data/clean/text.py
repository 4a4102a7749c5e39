"""Text repair for review and item text: HTML, mojibake, control characters, whitespace, empties
(the library of the ``clean`` and ``clean_items`` stages).

Every step is a polars expression over the whole column, except the two that need Python (HTML
entity unescaping and ftfy), which run only on the rows a cheap regex flags: entities where an
``&name;`` / ``&#n;`` pattern occurs, ftfy where the text has a non-ASCII character (pure ASCII
text cannot hold mojibake). Each step counts the values it changed, under ``<column>:<reason>``.

Steps, in order:

1. ``truncated``: values longer than ``max_chars`` are cut (a 1 MB review is garbage, not a review).
2. ``html_entities``: ``&amp;``, ``&#039;``, ``&eacute;`` ... unescaped (twice for ``&amp;quot;``).
3. ``html_tags``: tags of known HTML elements removed, including an opening tag cut off at the
   end of the value (Amazon 2018 meta titles are often just ``<span class="a-size-medium ..."``).
   Only known element names count as tags, so ``x <y and z> w`` is left alone.
4. ``mojibake``: ftfy's ``fix_text`` (encoding repair, NFC; quotes, widths and HTML left as they are).
5. ``replacement_chars``: U+FFFD (left where undecodable bytes were replaced) removed.
6. ``control_chars``: C0/C1 control characters other than whitespace, and zero-width marks, removed.
7. ``scrub_email`` / ``scrub_phone`` / ``scrub_url``: optional, removed from review text.
8. ``whitespace``: every whitespace run becomes one space, ends stripped.
9. ``empty_to_null``: a value left empty becomes null (``markup_only`` when it held only HTML).
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Callable, Iterable

import ftfy
import polars as pl

# Names of HTML elements: only these count as tags.
HTML_ELEMENTS = (
    "a abbr address area article aside audio b base bdi bdo big blockquote body br "
    "button canvas caption center cite code col colgroup dd del details dfn div dl dt em "
    "embed fieldset figcaption figure font footer form h1 h2 h3 h4 h5 h6 head header hr "
    "html i iframe img input ins kbd label legend li link main map mark meta nav "
    "noscript object ol optgroup option p param picture pre q s samp script section "
    "select small source span strike strong style sub summary sup svg table tbody td "
    "template textarea tfoot th thead time title tr tt u ul var video wbr"
)
_NAMES = "|".join(sorted(HTML_ELEMENTS.split(), key=len, reverse=True))
TAG = rf"(?i)<!--.*?-->|</?(?:{_NAMES})\b[^<>]*>|<(?:{_NAMES})\b[^<>]*$"
ENTITY = r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"
NON_ASCII = r"[^\x00-\x7F]"
CONTROL = r"[\x00-\x08\x0B\x0E-\x1F\x7F-\x9F\u200B-\u200D\u2060\uFEFF]"
REPLACEMENT = "\ufffd"
EMAIL = r"(?i)\b[A-Z0-9._%+-]+@[A-Z0-9.-]+\.[A-Z]{2,}\b"
URL = r"(?i)\b(?:https?://|www\.)[^\s<>\"']+"
PHONE = r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{3}\)\s?|\b\d{3}[\s.-])\d{3}[\s.-]\d{4}\b"
SCRUB = {"email": EMAIL, "phone": PHONE, "url": URL}

FTFY_CONFIG = ftfy.TextFixerConfig(unescape_html=False, uncurl_quotes=False, fix_character_width=False)


def unescape_html(text: str) -> str:
    """HTML entities resolved, twice over for doubly escaped text such as ``&amp;quot;``."""
    once = html.unescape(text)
    return html.unescape(once) if "&" in once else once


def fix_mojibake(text: str) -> str:
    """ftfy's encoding repair with the project's configuration."""
    return ftfy.fix_text(text, config=FTFY_CONFIG)


def _python_step(values: pl.Series, flag: pl.Series, fn: Callable[[str], str]) -> tuple[pl.Series, int]:
    """Apply ``fn`` to the flagged values only; return the column and how many values changed."""
    rows = flag.fill_null(False).arg_true()
    if rows.is_empty():
        return values, 0
    before = values.gather(rows)
    after = pl.Series(values.name, [fn(v) for v in before.to_list()], dtype=pl.String)
    changed = int((before != after).sum())
    return values.scatter(rows, after), changed


def _regex_step(values: pl.Series, pattern: str, replacement: str) -> tuple[pl.Series, int]:
    """Replace every match of ``pattern``; return the column and how many values held a match."""
    hit = values.str.contains(pattern).fill_null(False)
    count = int(hit.sum())
    if not count:
        return values, 0
    return values.str.replace_all(pattern, replacement), count


def clean_series(values: pl.Series, *, max_chars: int, scrub: Iterable[str] = ()) -> tuple[pl.Series, Counter[str]]:
    """Clean one text column; counts of changed values by reason (see the module docstring)."""
    counts: Counter[str] = Counter()
    values = values.cast(pl.String)
    too_long = values.str.len_chars().fill_null(0) > max_chars
    if too_long.any():
        counts["truncated"] = int(too_long.sum())
        values = pl.select(pl.when(too_long).then(values.str.slice(0, max_chars)).otherwise(values)).to_series()
    values, counts["html_entities"] = _python_step(values, values.str.contains(ENTITY), unescape_html)
    tagged = values.str.contains(TAG).fill_null(False)
    values, counts["html_tags"] = _regex_step(values, TAG, " ")
    values, counts["mojibake"] = _python_step(values, values.str.contains(NON_ASCII), fix_mojibake)
    values, counts["replacement_chars"] = _regex_step(values, REPLACEMENT, "")
    values, counts["control_chars"] = _regex_step(values, CONTROL, " ")
    for kind in scrub:
        values, counts[f"scrub_{kind}"] = _regex_step(values, SCRUB[kind], " ")
    normalized = values.str.replace_all(r"\s+", " ").str.strip_chars()
    counts["whitespace"] = int((normalized != values).fill_null(False).sum())
    empty = normalized.str.len_chars() == 0
    counts["markup_only"] = int((empty & tagged).sum())
    counts["empty_to_null"] = int(empty.sum()) - counts["markup_only"]
    values = pl.select(pl.when(empty).then(None).otherwise(normalized).alias(values.name)).to_series()
    return values, +counts


def clean_frame(
    frame: pl.DataFrame,
    columns: Iterable[str],
    *,
    max_chars: int,
    scrub: Iterable[str] = (),
) -> tuple[pl.DataFrame, Counter[str]]:
    """Clean the named text columns of ``frame`` (absent ones skipped); counts as ``<column>:<reason>``."""
    counts: Counter[str] = Counter()
    present = set(frame.columns)
    scrub = tuple(scrub)
    for column in columns:
        if column not in present:
            continue
        cleaned, column_counts = clean_series(frame[column], max_chars=max_chars, scrub=scrub)
        frame = frame.with_columns(cleaned.alias(column))
        counts.update({f"{column}:{reason}": n for reason, n in column_counts.items()})
    return frame, counts
