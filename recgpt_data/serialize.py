"""RecGPT's text format for a user's history (arXiv 2405.12715, Appendix B).

A history is the header ``Given the interaction history of a user with {noun} as follows:``, a blank
line, then one line per item with its fields written ``Key: value`` and joined by ``"; "``::

    Title: Rock-a-Stack; Brand: Fisher-Price; Review: My son loves ...; Rating: 5.0/5.0

A field an item lacks (null, or empty once cleaned) is left out; white space runs inside a value
become one space, so one item is always one line. Two paths give byte-identical lines: the scalar
functions (:func:`item_line`, for tests and instruction pairs) and the polars expressions
(:func:`item_line_expr`, which the corpus uses on whole frames).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import polars as pl

HEADER = "Given the interaction history of a user with {noun} as follows:"
SEPARATOR = "; "

# Every field a template may name, in the one order they appear on a line.
FIELDS = ("Title", "Brand", "Author", "Genres", "City", "Description", "Review", "Rating")
# Free-text fields: may hold "; " and field-like text, so once one starts only a trailing Rating ends it.
FREE_TEXT = ("Description", "Review")
GENRE_SEPARATOR = ", "

# Unicode White_Space plus the ASCII separators that str.splitlines() treats as line breaks,
# written out so that Python's ``re`` and polars' Rust regex match exactly the same characters.
_WHITESPACE_CHARS = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
WHITESPACE = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in _WHITESPACE_CHARS) + "]+"
_WHITESPACE_RE = re.compile("[" + "".join(f"\\U{ord(c):08x}" for c in _WHITESPACE_CHARS) + "]+")

_HEADER_RE = re.compile(r"\AGiven the interaction history of a user with (?P<noun>.+?) as follows:\n\n")
_MARKER_RE = re.compile(r"(?:\A|; )(?P<field>" + "|".join(FIELDS) + r"):(?: |\Z)")
_RATING_TAIL_RE = re.compile(r"; Rating:(?: (?P<value>[0-9.e+-]+/[0-9.e+-]+))?\Z")


def clean_value(text: str) -> str:
    """``text`` with every white space run (newlines included) made one space, and stripped."""
    return _WHITESPACE_RE.sub(" ", text).strip(" ")


def format_rating(rating: float, rating_max: float) -> str:
    """A rating on its source's scale, as RecGPT writes it: ``5.0/5.0``, ``8.0/10.0``, ``4.5/5.0``."""
    return f"{float(rating)!r}/{float(rating_max)!r}"


def field_values(interaction: Mapping[str, object], item: Mapping[str, object]) -> dict[str, object]:
    """The template field values of one event, from a canonical ``interactions`` row and its
    ``items`` row (either may lack columns); the scalar twin of :func:`field_exprs`."""
    categories = item.get("categories")
    rating, rating_max = interaction.get("rating"), interaction.get("rating_max")
    return {
        "Title": item.get("title"),
        "Brand": item.get("brand"),
        "Author": item.get("author") if item.get("author") is not None else item.get("brand"),
        "Genres": _join_genres(categories) if categories is not None else None,
        "City": item.get("city"),
        "Description": item.get("description"),
        "Review": interaction.get("review_text"),
        "Rating": None if rating is None or rating_max is None else format_rating(rating, rating_max),
    }


def item_line(values: Mapping[str, object], fields: Sequence[str], rating_max: float | None) -> str:
    """One item's line: ``fields`` in order, each ``Key: value``, joined by ``"; "``.

    ``values`` are keyed by field name. A null or (once cleaned) empty value is left out. A numeric
    ``Rating`` is written with :func:`format_rating` on ``rating_max`` (left out where that is
    ``None``); a ``Genres`` list is joined with ``", "``.
    """
    parts = []
    for name in fields:
        _check_field(name)
        value = values.get(name)
        if value is None:
            continue
        if name == "Rating" and isinstance(value, (int, float)):
            if rating_max is None:
                continue
            value = format_rating(value, rating_max)
        elif isinstance(value, (list, tuple)):
            value = _join_genres(value)
        text = clean_value(str(value))
        if text:
            parts.append(f"{name}: {text}")
    return SEPARATOR.join(parts)


def history_text(noun: str, lines: Sequence[str]) -> str:
    """A whole history: the header for ``noun``, a blank line, then the item lines."""
    return HEADER.format(noun=noun) + "\n\n" + "\n".join(lines)


def render_fields(fields: Mapping[str, str]) -> str:
    """An item line from already-rendered values, in the given order; an empty value is written as
    an open field (``Rating:``), as rating prompts end. Inverse of :func:`parse_item_line`."""
    return SEPARATOR.join(f"{name}: {value}" if value else f"{name}:" for name, value in fields.items())


def parse_item_line(line: str) -> dict[str, str]:
    """The fields of an item line, in order (inverse of :func:`item_line` / :func:`render_fields`).

    The line is split only before ``"; <Field>: "`` of a known field that comes later in
    :data:`FIELDS` than the one before it; a review or description may hold ``"; "`` and even
    field-like text, so once one starts only a trailing ``Rating`` ends it.
    """
    if "\n" in line:
        raise ValueError("an item line holds no newline")
    tail: dict[str, str] = {}
    rating = _RATING_TAIL_RE.search(line)
    if rating:
        tail["Rating"] = rating.group("value") or ""
        line = line[: rating.start()]
    markers = []
    last_rank = -1
    for match in _MARKER_RE.finditer(line):
        name = match.group("field")
        rank = FIELDS.index(name)
        if rank <= last_rank or (rating and name == "Rating"):
            continue
        markers.append(match)
        last_rank = rank
        if name in FREE_TEXT:
            break
    if not markers or markers[0].start() != 0:
        if not line and tail:
            return tail
        raise ValueError(f"not a RecGPT item line (must start with a known field): {line[:80]!r}")
    fields: dict[str, str] = {}
    for match, following in zip(markers, [*markers[1:], None], strict=True):
        end = following.start() if following else len(line)
        fields[match.group("field")] = line[match.end() : end]
    fields.update(tail)
    return fields


def parse_history(text: str) -> tuple[str, list[dict[str, str]]]:
    """The noun and the items' fields of a history written by :func:`history_text`."""
    header = _HEADER_RE.match(text)
    if header is None:
        raise ValueError(f"not a RecGPT history (header missing): {text[:80]!r}")
    body = text[header.end() :]
    return header.group("noun"), [parse_item_line(line) for line in body.split("\n")]


def clean_expr(expr: pl.Expr) -> pl.Expr:
    """:func:`clean_value` as a polars expression; a value empty once cleaned becomes null."""
    cleaned = expr.str.replace_all(WHITESPACE, " ").str.strip_chars(" ")
    return pl.when(cleaned.str.len_bytes() > 0).then(cleaned)


def field_exprs(available: Sequence[str]) -> dict[str, pl.Expr]:
    """Each template field as an expression over a frame of interactions joined with items
    (canonical column names); columns absent from ``available`` give null."""
    present = set(available)

    def col(name: str, dtype: pl.DataType | None = None) -> pl.Expr:
        return pl.col(name) if name in present else pl.lit(None, dtype or pl.String())

    rating = col("rating", pl.Float64()).cast(pl.Float64)
    rating_max = col("rating_max", pl.Float64()).cast(pl.Float64)
    return {
        "Title": col("title"),
        "Brand": col("brand"),
        "Author": pl.coalesce(col("author"), col("brand")),
        "Genres": col("categories", pl.List(pl.String())).list.join(GENRE_SEPARATOR),
        "City": col("city"),
        "Description": col("description"),
        "Review": col("review_text"),
        "Rating": pl.concat_str([rating.cast(pl.String), pl.lit("/"), rating_max.cast(pl.String)]),
    }


def item_line_expr(fields: Sequence[str], available: Sequence[str]) -> pl.Expr:
    """The item line of every row of a frame (interactions joined with items), as an expression:
    byte-identical to :func:`item_line` on :func:`field_values` of the same row."""
    exprs = field_exprs(available)
    for name in fields:
        _check_field(name)
    parts = [pl.lit(f"{name}: ") + clean_expr(exprs[name]) for name in fields]
    return pl.concat_str(parts, separator=SEPARATOR, ignore_nulls=True)


def _join_genres(values: Sequence[object]) -> str:
    return GENRE_SEPARATOR.join(str(v) for v in values if v is not None)


def _check_field(name: str) -> None:
    if name not in FIELDS:
        raise ValueError(f"unknown template field {name!r}; known: {', '.join(FIELDS)}")
