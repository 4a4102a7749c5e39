"""A plain file cut into byte ranges by its size alone: each range's block is the lines that start
in it, so the ranges give every line of the file once, in order, whatever its line endings, a line
longer than a range or a UTF-8 character cut by a range's edge; the ingest stage reads each range
once, numbers its lines from 1 and moves the numbers by the lines before it afterwards, which gives
the line numbers of a plain reading of the file."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from test_ingest_blocks import ingested

from recgpt_data.ingest_tasks import Block, FileTask, Shift, read_block, shifted
from recgpt_data.io.streams import BOM, LineBlocks

REVIEWS = ("yelp", "yelp_academic_dataset_review.json")  # real JSON lines with UTF-8 text, up to 5 KB a line


def plain_lines(path: Path) -> list[bytes]:
    """The file's lines as Python reads them: ``open`` in binary mode (lines end at LF only), each
    without its LF or CR LF, the first without a byte order mark."""
    with open(path, "rb") as handle:
        lines = [line.removesuffix(b"\n").removesuffix(b"\r") for line in handle]
    return [lines[0].removeprefix(BOM), *lines[1:]] if lines else []


def ranges(size: int, width: int) -> list[tuple[int, int]]:
    """``[start, end)`` ranges of ``width`` bytes that tile a file of ``size`` bytes."""
    return [(start, min(start + width, size)) for start in range(0, size, width)]


def edges(data: bytes, width: int, starts: list[int]) -> dict[str, bool]:
    """What the edges of ranges of ``width`` cut in ``data`` (whose lines start at ``starts``): a
    UTF-8 character, a CR LF, whether one falls just after a line break, and whether a range holds
    no line start (a line longer than a range runs through it)."""
    cuts = range(width, len(data), width)
    return {
        "utf8": any(data[at] & 0xC0 == 0x80 for at in cuts),
        "crlf": any(data[at - 1 : at + 1] == b"\r\n" for at in cuts),
        "after_break": any(data[at - 1] == 10 for at in cuts),
        "empty_range": len({start // width for start in starts}) < len(cuts) + 1,
    }


def line_starts(data: bytes) -> list[int]:
    """Where each line of ``data`` starts: at 0 and after every LF (but the last byte)."""
    return [0, *(m.end() for m in re.finditer(b"\n", data) if m.end() < len(data))]


def variants(shared: Path) -> dict[str, bytes]:
    """The first three real Yelp reviews and the first three with UTF-8 text beyond ASCII, as
    published and with the other endings a file may have."""
    lines = shared.joinpath(*REVIEWS).read_bytes().splitlines()
    head = lines[:3] + [line for line in lines if any(b > 127 for b in line)][:3]
    return {
        "lf": b"\n".join(head) + b"\n",
        "bom_crlf_no_final_break": BOM + b"\r\n".join(head),
        "blank_lines_and_a_lone_cr": b"\n\n" + b"\n\n\n".join(head) + b"\n\r",
        "one_line_no_break": head[-1],
        "empty": b"",
    }


@pytest.mark.parametrize("width", [1, 3, 64, 997, 1 << 20])
@pytest.mark.parametrize(
    "variant", ["lf", "bom_crlf_no_final_break", "blank_lines_and_a_lone_cr", "one_line_no_break", "empty"]
)
def test_ranges_give_every_line_once_in_order(shared: Path, tmp_path: Path, variant: str, width: int) -> None:
    data = variants(shared)[variant]
    path = tmp_path / "reviews.json"
    path.write_bytes(data)
    expected = plain_lines(path)
    got, counts = [], 0
    for span in ranges(len(data), width):
        for _, block, count in LineBlocks(path, 256, span=span):
            got += block.split(b"\n")
            counts += count
    assert got == expected and counts == len(expected)
    if width == 1 and variant in ("lf", "bom_crlf_no_final_break"):  # the edges these ranges cut
        cut = edges(data, width, line_starts(data))
        assert cut == {"utf8": True, "crlf": variant != "lf", "after_break": True, "empty_range": True}


def test_a_ranges_lines_moved_by_those_before_it_are_the_piece_of_its_known_first_line(
    shared: Path, tmp_path: Path
) -> None:
    """The range of 4 KiB of the Yelp reviews that holds the malformed line 400: its piece, its
    lines numbered from 1 and moved by those that start before the range (counted here from the
    file's bytes), has the bytes of the piece read knowing its first line, rows and rejects."""
    path, _ = yelp_with_bad_lines(shared, tmp_path / "raw")
    data = path.read_bytes()
    at = 0
    for _ in range(399):
        at = data.index(b"\n", at) + 1
    start = at // 4096 * 4096
    span = (start, start + 4096)
    before = data.count(b"\n", 0, start - 1)  # the lines that start before the range
    task = FileTask(0, "yelp", 1, "interactions", str(path), "yelp", str(tmp_path / "pieces"), 4096, None, 0)
    local = read_block(Block(task, 7, str(path), 1, span))
    known = read_block(Block(replace(task, folder=str(tmp_path / "known")), 7, str(path), before + 1, span))
    moved = shifted(Shift(task, local, before))
    assert 0 < before < 399 < before + local.lines
    assert moved.tables.keys() == known.tables.keys() == {"interactions", "dropped_raw"}
    for table, (file, rows) in moved.tables.items():
        assert (Path(file).read_bytes(), rows) == (Path(known.tables[table][0]).read_bytes(), known.tables[table][1])


def yelp_with_bad_lines(shared: Path, folder: Path) -> tuple[Path, int]:
    """The real Yelp reviews as a published file may be (a byte order mark, CR LF endings, no break
    after its last line) with a blank, a malformed and a not-an-object line among them, and a range
    width whose edges cut a UTF-8 character and a CR LF and fall after a line break, with a range
    that no line starts in."""
    lines = shared.joinpath(*REVIEWS).read_bytes().splitlines()
    for number, bad in {3: b"", 400: b'{"user_id": ', 801: b'"a string"'}.items():
        lines.insert(number - 1, bad)
    data = BOM + b"\r\n".join(lines)
    starts = line_starts(data)
    width = next(w for w in range(3000, 5000) if all(edges(data, w, starts).values()))
    folder.mkdir(parents=True)
    path = folder / REVIEWS[1]
    path.write_bytes(data)
    return path, width


def test_the_ingest_stage_numbers_a_files_ranges_as_a_plain_reading(shared: Path, tmp_path: Path) -> None:
    """The Yelp reviews in ranges of about 4 KB: the rows (user, item, line) and the rejects (line,
    raw text) of a plain reading with ``json.loads``, and the tables and accounting of the file read
    in one block."""
    path, width = yelp_with_bad_lines(shared, tmp_path / "raw")
    rows, rejected = [], []
    for number, line in enumerate(plain_lines(path), 1):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            rows.append((record["user_id"], record["business_id"], number))
        else:
            rejected.append((number, line.decode()))
    assert [n for n, _ in rejected] == [3, 400, 801] and len(rows) == 999
    tables, stats, files = ingested(path, "yelp", tmp_path / "ranges", width, workers=2)
    assert files > 150
    assert list(tables["interactions"].select("user_id", "item_id", "src_line").iter_rows()) == rows
    assert list(tables["dropped_raw"].select("line", "raw").iter_rows()) == rejected
    assert tables["dropped_raw"]["drop_reason"].to_list() == [
        "yelp:blank_line",
        "yelp:malformed_json",
        "yelp:not_an_object",
    ]
    whole, whole_stats, whole_files = ingested(path, "yelp", tmp_path / "whole", None)
    assert whole_files == 1
    assert tables.keys() == whole.keys() and all(tables[n].equals(whole[n]) for n in whole)
    assert stats["info"] == whole_stats["info"] and stats["dropped"] == whole_stats["dropped"]
