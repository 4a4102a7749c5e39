"""Python dict literal lines (Amazon 2014 metadata, the UCSD Steam files), read without ``eval``.

The owners wrote these files with Python 2's ``repr``: ``{u'title': u'Caf\\xe9', 'price': 9.49,
'early_access': False}``. The fast path transcodes a whole block of such lines to JSON with a handful
of C-speed string operations (one regex split into string literals and the text between them, then
bulk replacements on each side) and parses the block with polars. It only does so where it can be
sure the JSON means exactly what ``ast.literal_eval`` would return; any line it cannot be sure of
(an escape JSON lacks, a tuple, a non-string key, a name other than True/False/None, a cut line) is
read on its own with ``ast.literal_eval`` and re-encoded, or rejected with the reason it failed.

One difference is left: a literal repeating a key keeps the last value in Python and the first in
polars; ``repr`` of a dict never repeats a key.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from functools import partial

import polars as pl

from recgpt_data.sources.base import LINE, RawBatch, Reject
from recgpt_data.sources.readers import LineReader, decode, json_lines_batch, parse_block, raw_lookup

# A string literal in single or double quotes (no line breaks inside); the two groups hold the text
# between the quotes, and a ``u`` prefix stays outside.
_STRING = re.compile(rb"""'([^'\\\n]*(?:\\.[^'\\\n]*)*)'|"([^"\\\n]*(?:\\.[^"\\\n]*)*)\"""")
# Between string literals only JSON punctuation, white space and numbers may remain (once
# True/False/None and u prefixes are taken out): a letter, quote, bracket or other prefix there
# means "not sure".
_BAD_OUTSIDE = re.compile(rb"[^ \t\n{}\[\],:\x000-9.eE+\-]")
# Python escapes that JSON spells the same way (after \xhh and \Uhhhhhhhh are rewritten).
_BAD_ESCAPE = re.compile(rb'\\[^"nrtbfu]')
_WIDE = re.compile(rb"\\U([0-9a-fA-F]{8})")
_SEP, _BACKSLASH, _QUOTE = b"\x00", b"\x01", b"\x02"


def _utf16(match: re.Match) -> bytes:
    code = int(match.group(1), 16)
    if code < 0x10000:
        return b"\\u%04x" % code
    code -= 0x10000
    return b"\\u%04x\\u%04x" % (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF))


def _strings_to_json(contents: list[bytes]) -> list[bytes] | None:
    """The text inside Python string literals as the text inside JSON strings, or ``None``.

    Both quote styles take the same rewrite: ``\\'`` needs no escape in JSON, a bare ``"`` (only
    possible inside single quotes) needs one, and ``\\xhh`` becomes ``\\u00hh``."""
    text = _SEP.join(contents)
    text = text.replace(b"\\\\", _BACKSLASH).replace(b'\\"', _QUOTE).replace(b"\\'", b"'")
    text = text.replace(b'"', b'\\"').replace(b"\\x", b"\\u00")
    if b"\\U" in text:
        text = _WIDE.sub(_utf16, text)
    if _BAD_ESCAPE.search(text):
        return None
    return text.replace(_QUOTE, b'\\"').replace(_BACKSLASH, b"\\\\").split(_SEP)


def _between_to_json(parts: list[bytes]) -> list[bytes] | None:
    """The text around string literals with True/False/None spelled the JSON way, u prefixes
    dropped and the JSON quotes added, or ``None`` where not sure."""
    text = _SEP.join(parts).replace(b"u" + _SEP, _SEP)
    if _BAD_OUTSIDE.search(text.replace(b"True", b"").replace(b"False", b"").replace(b"None", b"")):
        return None
    text = text.replace(b"True", b"true").replace(b"False", b"false").replace(b"None", b"null")
    return text.replace(_SEP, b'"' + _SEP + b'"').split(_SEP)


def to_json(text: bytes) -> bytes | None:
    """``text`` (Python literal lines, UTF-8) transcoded to JSON lines, or ``None`` where not sure."""
    if _SEP in text or _BACKSLASH in text or _QUOTE in text:
        return None
    parts = _STRING.split(text)
    single, double = parts[1::3], parts[2::3]
    strings = _strings_to_json([s if s is not None else d for s, d in zip(single, double)]) if single else []
    between = _between_to_json(parts[0::3])
    if strings is None or between is None:
        return None
    joined: list[bytes | None] = [None] * (len(between) + len(strings))
    joined[0::2] = between
    joined[1::2] = strings
    return b"".join(joined)


class UnusableLiteral(ValueError):
    """A line that is not a usable dict literal; the message is the reject reason."""


def literal_to_json(line: str) -> str:
    """One literal line as JSON: transcoded where sure, else via ``ast.literal_eval``.

    Raises :class:`UnusableLiteral` with a reject reason where the line is not a usable dict literal."""
    fast = to_json(line.encode("utf-8"))
    if fast is not None:
        try:
            value = json.loads(fast)
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, dict):
            return fast.decode("utf-8")
    try:
        value = ast.literal_eval(line)
    except (RecursionError, MemoryError):
        raise UnusableLiteral("nested_too_deep") from None
    except (ValueError, SyntaxError, TypeError):
        raise UnusableLiteral("malformed_literal") from None
    if not isinstance(value, dict):
        raise UnusableLiteral("not_an_object")
    try:
        return json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError):
        raise UnusableLiteral("unsupported_value") from None


def pyliteral(schema: dict[str, pl.DataType]) -> LineReader:
    """A reader of Python dict literal lines whose wanted fields and types are ``schema``."""
    return LineReader(partial(_literal_block, schema=schema))


def _literal_block(first: int, block: bytes, count: int, schema: dict[str, pl.DataType]) -> RawBatch:
    raw_text = raw_lookup(first, block)
    transcoded = to_json(block)
    if transcoded is not None:
        frame = parse_block(transcoded, count, schema)
        if frame is not None:
            lines = pl.int_range(first, first + count, eager=True, dtype=pl.Int64)
            return RawBatch(frame.with_columns(lines.alias(LINE)), [], raw_text)
    return _literal_lines(first, block.split(b"\n"), schema, raw_text)


def _literal_lines(
    first: int, lines: list[bytes], schema: dict[str, pl.DataType], raw_text: Callable[[int], str]
) -> RawBatch:
    """Read a block line by line, rejecting blank, non-UTF-8 and malformed lines."""
    rejects: list[Reject] = []
    good: list[bytes] = []
    numbers: list[int] = []
    for number, line in enumerate(lines, first):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            rejects.append(Reject(number, "invalid_utf8", decode(line)))
            continue
        if not text.strip():
            rejects.append(Reject(number, "blank_line", text))
            continue
        try:
            good.append(literal_to_json(text).encode("utf-8"))
            numbers.append(number)
        except UnusableLiteral as exc:
            rejects.append(Reject(number, str(exc), text))
    batch = json_lines_batch(numbers, good, schema, raw_text)
    batch.rejects.extend(rejects)
    batch.rejects.sort(key=lambda r: r.line)
    return batch
