"""The ``ingest`` stage reads a big JSON-lines file in blocks of lines, each parsed in its own task:
exactly the rows, in order, and the reject line numbers of a plain reading of the file line by
line, and the same tables and accounting as reading it in one block."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from conftest import CLI, assert_failed_cleanly, mounted_tmpfs

from recgpt_data.engines.local import LocalEngine
from recgpt_data.pipeline.runner import run_spec
from recgpt_data.pipeline.spec import load_spec

BAD_LINES = {  # line number in the file -> what is put there, before the real line of that number
    2: b"",  # blank
    700: b'{"reviewerID": "A1", "asin": ',  # malformed
    2401: b"[1, 2, 3]",  # not an object
    4999: b'{"reviewerID": ["A1"], "asin": "B1", "overall": 5.0}',  # a list for an id: not an id of its form
}
BLOCK = 48 << 10  # the 2.4 MB file (0.7 MB gzipped) in about fifty blocks


def beauty_with_bad_lines(shared: Path, folder: Path, compressed: bool) -> Path:
    """The real Amazon 2018 All Beauty 5-core reviews with :data:`BAD_LINES` injected."""
    lines = (shared / "amazon2018" / "All_Beauty_5.json").read_bytes().splitlines()
    for number in sorted(BAD_LINES):
        lines.insert(number - 1, BAD_LINES[number])
    data = b"\n".join(lines) + b"\n"
    folder.mkdir(parents=True)
    path = folder / ("All_Beauty_5.json.gz" if compressed else "All_Beauty_5.json")
    path.write_bytes(gzip.compress(data, mtime=0) if compressed else data)
    return path


def plain_reading(path: Path) -> tuple[list[tuple[str, str, float, int]], list[int]]:
    """The file read line by line with ``json.loads``: each object's (reviewer, item, rating, line)
    where its fields are strings and its rating a number, and the numbers of the other lines."""
    rows, rejected = [], []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            fits = isinstance(record, dict) and all(isinstance(record.get(k), str) for k in ("reviewerID", "asin"))
            if fits and isinstance(record.get("overall"), (int, float)):
                rows.append((record["reviewerID"], record["asin"], float(record["overall"]), number))
            else:
                rejected.append(number)
    return rows, rejected


def ingested(
    path: Path, format: str, out: Path, block_bytes: int | None, workers: int = 1
) -> tuple[dict[str, pl.DataFrame], dict, int]:
    """The ingest stage on ``path`` (blocks of ``block_bytes``, or the default) with its tasks in
    ``workers`` processes: its tables (rows in order), its stats, and how many files its
    interactions are."""
    spec = out.parent / f"{out.name}.toml"
    params = f"params.block_bytes = {block_bytes}\n" if block_bytes else ""
    spec.write_text(
        f'name = "blocks"\n\n[[stages]]\nstage = "ingest"\n{params}'
        f"params.sources = [{{ format = \"{format}\", paths = ['{path}'] }}]\n",
        encoding="utf-8",
    )
    engine = LocalEngine(workers=workers)
    try:
        result = run_spec(load_spec(spec), out, engine=engine)
    finally:
        engine.close()
    stage = out / ".stages" / "ingest"
    record = json.loads((stage / "_SUCCESS.json").read_text())
    tables = {n: pl.read_parquet([stage / f["path"] for f in t["files"]]) for n, t in record["tables"].items()}
    return tables, result.stats["ingest"], len(record["tables"]["interactions"]["files"])


@pytest.mark.parametrize("compressed", [True, False], ids=["gzip", "plain"])
def test_a_file_read_in_blocks_gives_the_rows_and_rejects_of_a_plain_reading(
    shared: Path, tmp_path: Path, compressed: bool
) -> None:
    path = beauty_with_bad_lines(shared, tmp_path / "raw", compressed)
    rows, rejected = plain_reading(path)
    assert (len(rows), rejected) == (5269, sorted(BAD_LINES))
    tables, stats, files = ingested(path, "amazon2018", tmp_path / "blocks", BLOCK, workers=2)
    assert files > 10
    assert list(tables["interactions"].select("user_id", "item_id", "rating", "src_line").iter_rows()) == rows
    rejects = tables["dropped_raw"]
    assert rejects["line"].to_list() == rejected
    assert rejects["drop_reason"].to_list() == [
        "amazon2018:blank_line",
        "amazon2018:malformed_json",
        "amazon2018:not_an_object",
        "amazon2018:bad_user_id",
    ]
    raw = (gzip.decompress(path.read_bytes()) if compressed else path.read_bytes()).split(b"\n")
    assert rejects["raw"].to_list() == [raw[n - 1].decode() for n in rejected]
    whole, whole_stats, whole_files = ingested(path, "amazon2018", tmp_path / "whole", None)
    assert whole_files == 1
    assert tables.keys() == whole.keys() and all(tables[n].equals(whole[n]) for n in whole)
    assert stats["info"] == whole_stats["info"] and stats["dropped"] == whole_stats["dropped"]
    assert stats["rows_out"] == whole_stats["rows_out"] == {"interactions": 5269, "items": 0}


def test_a_cut_gzip_read_in_blocks_reports_the_cut_like_one_block(shared: Path, tmp_path: Path) -> None:
    """The real truncated Amazon 2014 Digital Music reviews: its 6,908 complete lines in blocks, its
    partial last line a rejected record numbered after them, and the file's warning, as in one block."""
    folder = tmp_path / "raw"
    folder.mkdir()
    path = Path(shutil.copy(shared / "amazon2014" / "reviews_Digital_Music_5.json.gz", folder))
    tables, stats, files = ingested(path, "amazon2014", tmp_path / "blocks", 256 << 10)
    whole, whole_stats, _ = ingested(path, "amazon2014", tmp_path / "whole", None)
    assert files > 3
    (summary,) = stats["info"]["sources"][0]["files"]
    assert (summary["read"], summary["kept"], summary["rejected"], summary["truncated"]) == (
        6909,
        6908,
        {"truncated_record": 1},
        True,
    )
    assert "kept the 6908 complete lines before the cut" in summary["warning"]
    assert tables["dropped_raw"]["line"].to_list() == [6909]
    assert stats["info"] == whole_stats["info"] and stats["dropped"] == whole_stats["dropped"]
    assert tables.keys() == whole.keys() and all(tables[n].equals(whole[n]) for n in whole)


def stage_files(out: Path) -> dict[str, str]:
    """sha256 of every file the ingest stage keeps but its record (which holds its timing)."""
    stage = out / ".stages" / "ingest"
    return {
        str(p.relative_to(stage)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(stage.rglob("*"))
        if p.is_file() and p.name != "_SUCCESS.json"
    }


def test_a_full_disk_fails_the_reading_tasks_in_one_line_and_a_rerun_gives_the_same_bytes(tmp_path: Path) -> None:
    """The demo's Amazon 2018 files in 16 KiB blocks into a 64 KiB disk: the tasks' writes fail, the
    run stops with one error line, and nothing it left looks complete; rerun on what it left, once
    there is room, it gives the bytes of a run that never failed."""
    spec = tmp_path / "full.toml"
    spec.write_text(
        'name = "full"\n\n[[stages]]\nstage = "ingest"\nparams.block_bytes = 16384\n'
        'params.sources = [{ format = "amazon2018", paths = ["demo:amazon2018"] }]\n',
        encoding="utf-8",
    )
    disk = tmp_path / "disk"
    if not mounted_tmpfs(disk, "size=64k"):
        pytest.skip("mounting a small tmpfs needs root")
    try:
        failed = subprocess.run([str(CLI), "run", str(spec), "--out", str(disk)], capture_output=True, text=True)
        assert_failed_cleanly(failed, 3, "No space left on device")
        left = [p for p in disk.rglob("*") if p.is_file()]
        assert not (disk / ".stages" / "ingest").exists()
        assert not [p for p in left if p.suffix == ".tmp" or p.name == "_SUCCESS.json"]
        shutil.copytree(disk, tmp_path / "left")
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    for out in (tmp_path / "left", tmp_path / "clean"):
        done = subprocess.run([str(CLI), "run", str(spec), "--out", str(out)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert stage_files(tmp_path / "left") == stage_files(tmp_path / "clean")
    assert len(stage_files(tmp_path / "clean")) > 3
