"""Bad input through the ingest driver: cut and recompressed streams, broken lines of every kind,
and the CLI's one-line errors. Every input line is accounted for: read = kept + rejected."""

from __future__ import annotations

import ast
import bz2
import gzip
import json
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import polars as pl
import pytest
from conftest import assert_failed_cleanly, mounted_tmpfs

from recgpt_data.ingest import ingest
from recgpt_data.io.streams import LineBlocks
from recgpt_data.sources.readers import prefetched

CLI = Path(sys.executable).with_name("recgpt-data")


def rejects(out: Path) -> list[dict]:
    """The rejects file's rows, by line number."""
    found = [json.loads(line) for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    return sorted(found, key=lambda r: (r["file"], r["line"]))


def rows(out: Path, table: str) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(f) for f in sorted(out.glob(f"{table}/**/*.parquet"))])


def assert_accounted(summary: dict) -> None:
    assert summary["read"] == summary["kept"] + sum(summary["rejected"].values())
    for f in summary["files"]:
        assert f["read"] == f["kept"] + sum(f["rejected"].values())


@pytest.mark.parametrize(
    ("name", "complete"),
    [("reviews_Digital_Music_5.json.gz", 6_908), ("meta_Digital_Music.json.gz", 7_419)],
)
def test_truncated_gzip_keeps_complete_records_and_warns(shared, tmp_path, name, complete):
    path = shared / "amazon2014" / name
    data = zlib.decompressobj(wbits=31).decompress(path.read_bytes())
    assert data.count(b"\n") == complete
    partial = data.rsplit(b"\n", 1)[1].decode()
    summary = ingest("amazon2014", [path], tmp_path).to_dict()
    (file,) = summary["files"]
    assert (file["read"], file["kept"], file["rejected"], file["truncated"]) == (
        complete + 1,
        complete,
        {"truncated_record": 1},
        True,
    )
    warning = file["warning"]
    assert name in warning and str(complete) in warning
    assert rejects(tmp_path) == [
        {"file": str(path), "line": complete + 1, "reason": "truncated_record", "raw": partial}
    ]
    assert warning in json.loads((tmp_path / "summary.json").read_text())["warnings"]


def test_bz2_input_reads_like_gzip(shared, tmp_path):
    gz = shared / "amazon2014" / "reviews_Musical_Instruments_5.json.gz"
    data = zlib.decompressobj(wbits=31).decompress(gz.read_bytes())
    copy = tmp_path / "in" / "reviews_Musical_Instruments_5.json.bz2"
    copy.parent.mkdir()
    copy.write_bytes(bz2.compress(data))
    from_bz2 = ingest("amazon2014", [copy], tmp_path / "bz2")
    from_gz = ingest("amazon2014", [gz], tmp_path / "gz")
    assert from_bz2.kept == from_gz.kept == data.count(b"\n") == 10_261
    assert [f.warning for f in from_bz2.files] == [None]
    assert (
        rows(tmp_path / "bz2", "interactions")
        .drop("src_file")
        .equals(rows(tmp_path / "gz", "interactions").drop("src_file"))
    )


def test_cut_bz2_keeps_complete_records(shared, tmp_path):
    gz = shared / "amazon2014" / "reviews_Musical_Instruments_5.json.gz"
    packed = bz2.compress(zlib.decompressobj(wbits=31).decompress(gz.read_bytes()))
    cut = tmp_path / "reviews_Musical_Instruments_5.json.bz2"
    cut.write_bytes(packed[: len(packed) // 2])
    decoder = bz2.BZ2Decompressor()
    expected = decoder.decompress(packed[: len(packed) // 2]).count(b"\n")
    summary = ingest("amazon2014", [cut], tmp_path / "out")
    assert summary.kept == expected > 0
    assert summary.rejected == {"truncated_record": 1}
    (file,) = summary.files
    assert "bz2" in file.warning


@pytest.fixture
def broken_json(shared: Path, tmp_path: Path) -> tuple[Path, list[bytes]]:
    """Real Amazon 2018 review lines with one broken line of each kind among them."""
    good = (shared / "amazon2018" / "All_Beauty_5.json").read_bytes().split(b"\n")[:6]
    lines = [
        good[0],
        good[1],
        b'{"reviewerID": "A2", "asin": "B0000530HU", "overall": 5.0, "summary": "cut',  # 3 malformed
        b'{"reviewerID": "A3", "asin": "B0000530HU", "reviewText": "caf\xe9"}',  # 4 latin-1 byte
        b"",  # 5 blank
        b'{"asin": "B0000530HU", "overall": 4.0, "reviewText": "who wrote this?"}',  # 6 no reviewerID
        b'["A4", "B0000530HU", 5.0]',  # 7 not an object
        b'{"reviewerID": "A5", "asin": "B0000530HU", "overall": {"stars": 5}}',  # 8 wrong type
        good[2],
        good[3],
    ]
    path = tmp_path / "All_Beauty_5.json"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, lines


def test_broken_json_lines_go_to_rejects_with_reasons(broken_json, tmp_path):
    path, lines = broken_json
    summary = ingest("amazon2018", [path], tmp_path / "out").to_dict()
    assert_accounted(summary)
    assert summary["read"] == len(lines) == 10
    assert summary["kept"] == 4
    got = rejects(tmp_path / "out")
    assert [(r["line"], r["reason"]) for r in got] == [
        (3, "malformed_json"),
        (4, "invalid_utf8"),
        (5, "blank_line"),
        (6, "missing_user_id"),
        (7, "not_an_object"),
        (8, "bad_field_type"),
    ]
    assert all(r["file"] == str(path) for r in got)
    assert [r["raw"] for r in got] == [lines[n - 1].decode("utf-8", errors="replace") for n in (3, 4, 5, 6, 7, 8)]
    kept = rows(tmp_path / "out", "interactions")
    assert kept.get_column("src_line").to_list() == [1, 2, 9, 10]


def test_broken_python_literal_lines_go_to_rejects_with_reasons(shared, tmp_path):
    meta = zlib.decompressobj(wbits=31).decompress((shared / "amazon2014" / "meta_Digital_Music.json.gz").read_bytes())
    good = meta.split(b"\n")[:3]
    lines = [
        good[0],
        b"{'asin': 'X000000001', 'title': 'cut",  # 2 malformed
        b"['X000000002', 'a list']",  # 3 not an object
        b"",  # 4 blank
        b"{'asin': 'X000000003', 'title': 'caf\xe9'}",  # 5 latin-1 byte
        b"{'title': 'no asin'}",  # 6 missing asin
        b"{'asin': 'X000000004', 'title': u'\\N{BULLET} named escape', 'categories': (('A', 'B'),)}",  # 7 read by ast
        good[1],
        b"{'asin': 'X000000005', 'price': {1, 2}}",  # 9 a set: no JSON form
        good[2],
    ]
    path = tmp_path / "meta_Digital_Music.json"
    path.write_bytes(b"\n".join(lines) + b"\n")
    summary = ingest("amazon2014", [path], tmp_path / "out").to_dict()
    assert_accounted(summary)
    assert (summary["read"], summary["kept"]) == (10, 4)
    assert [(r["line"], r["reason"]) for r in rejects(tmp_path / "out")] == [
        (2, "malformed_literal"),
        (3, "not_an_object"),
        (4, "blank_line"),
        (5, "invalid_utf8"),
        (6, "missing_item_id"),
        (9, "unsupported_value"),
    ]
    items = rows(tmp_path / "out", "items")
    asins = [ast.literal_eval(line.decode())["asin"] for line in good]
    assert items.get_column("item_id").to_list() == [asins[0], "X000000004", asins[1], asins[2]]
    fallback = items.filter(pl.col("item_id") == "X000000004").row(0, named=True)
    assert (fallback["title"], fallback["categories"]) == ("\u2022 named escape", ["A", "B"])


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=120, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess, words: str) -> None:
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert words in line


def test_cli_missing_file_is_a_one_line_error(tmp_path):
    result = run_cli("ingest", "amazon2018", str(tmp_path / "nowhere.json"), "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "no such file or folder")
    assert result.stderr.strip().count("\n") == 0


def test_cli_unknown_format_is_a_one_line_error(tmp_path):
    result = run_cli("ingest", "amazon1999", str(tmp_path), "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "unknown format 'amazon1999'")
    assert result.stderr.strip().count("\n") == 0


def test_cli_unusable_input_exits_nonzero_after_the_summary(broken_json, tmp_path):
    path = tmp_path / "only_bad_5.json"
    path.write_bytes(b"not json\n[1]\n")
    result = run_cli("ingest", "amazon2018", str(path), "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "no usable records")
    assert "rejected malformed_json: 1" in result.stderr and "rejected not_an_object: 1" in result.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["rejected"] == {
        "malformed_json": 1,
        "not_an_object": 1,
    }


def test_cli_ingest_reports_counts_and_truncation(shared, tmp_path):
    result = run_cli("ingest", "amazon2014", str(shared / "amazon2014"), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["kept_by_table"] == {"interactions": 6_908 + 10_261, "items": 7_419}
    assert "rejected truncated_record: 2" in result.stderr
    assert [Path(f["file"]).name for f in summary["files"] if f["truncated"]] == [
        "meta_Digital_Music.json.gz",
        "reviews_Digital_Music_5.json.gz",
    ]
    assert result.stderr.count("warning:") == len(summary["warnings"]) >= 2


@pytest.mark.parametrize("name", ["lines.json", "lines.json.gz"])
def test_line_blocks_are_the_same_for_every_chunk_size(tmp_path, name):
    """Plain files are cut through mmap, compressed ones from decompressed chunks: same lines."""
    data = b'{"a": 1}\r\n{"b": 2}\r\n\r\n{"c": 3}\n{"d": 4}'
    path = tmp_path / name
    path.write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
    expected = data.replace(b"\r\n", b"\n").split(b"\n")
    for size in range(1, len(data) + 1):
        blocks = LineBlocks(path, chunk_bytes=size)
        lines, firsts = [], []
        for first, block, count in blocks:
            assert block.count(b"\n") + 1 == count
            firsts.append(first)
            lines += block.split(b"\n")
        assert lines == expected and blocks.lines == len(expected), size
        assert firsts[0] == 1


def test_prefetched_batches_raise_the_readers_error():
    def failing():
        yield 1
        raise ValueError("broken block")

    batches = prefetched(failing())
    assert next(batches) == 1
    with pytest.raises(ValueError, match="broken block"):
        next(batches)


def test_prefetched_batches_stop_their_thread_when_closed():
    def endless():
        n = 0
        while True:
            n += 1
            yield n

    batches = prefetched(endless())
    assert [next(batches) for _ in range(3)] == [1, 2, 3]
    batches.close()
    assert not any(t.name == "recgpt-read" for t in threading.enumerate())


# Names, the file system, the network and the lock: one line each, never a traceback.


def ingest_cli(source: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("ingest", "amazon2018", str(source), "--out", str(out), *args)


def test_cli_dataset_names_never_leave_out(shared, tmp_path):
    """One CLI run; the corpus in tests/hostile/ tries many more names through the same check."""
    result = ingest_cli(shared / "amazon2018" / "All_Beauty_5.json", tmp_path / "out", "--dataset", "../x")
    assert_failed_cleanly(result, 2, "is not safe as a path")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_names_module_refuses_tricks_and_keeps_paths_inside(tmp_path):
    from recgpt_data.errors import UsageError
    from recgpt_data.names import check_dataset, check_name, inside

    for good in ("beauty", "ml-latest-small", "All_Beauty", "v1.2"):
        assert check_name(good) == good
    assert check_dataset("amazon2018/All_Beauty") == "amazon2018/All_Beauty"
    for bad in ("..", ".", "", "a/b", "/x", ".hidden", "-x", "caf\u00e9", "\u2215x", "x" * 101, "a\x00"):
        with pytest.raises(UsageError, match="is not safe as a path"):
            check_name(bad)
    assert inside(tmp_path, tmp_path / "a" / "b") == (tmp_path / "a" / "b").resolve()
    (tmp_path / "link").symlink_to("/tmp")
    for outside in (tmp_path / ".." / "x", Path("/etc/passwd"), tmp_path / "link" / "x"):
        with pytest.raises(UsageError, match="outside"):
            inside(tmp_path, outside)


def test_spec_and_benchmark_names_are_checked(tmp_path):
    from pydantic import ValidationError

    from recgpt_data.errors import UsageError
    from recgpt_data.pipeline.spec import load_spec
    from recgpt_data.stages.load_p5 import LoadP5Params
    from recgpt_data.stages.p5_benchmark import P5BenchmarkParams

    for line in ('name = "../escape"', 'name = "ok"\n[[stages]]\nstage = "ingest"\nid = "/abs"'):
        spec = tmp_path / "spec.toml"
        spec.write_text(line + ('\n[[stages]]\nstage = "ingest"\n' if "stages" not in line else "\n"))
        with pytest.raises(UsageError, match="not safe as a path"):
            load_spec(spec)
    with pytest.raises(ValidationError, match="not safe as a path"):
        P5BenchmarkParams(benchmarks=[{"name": "../../x", "dataset": "yelp"}])
    with pytest.raises(ValidationError, match="not safe as a path"):
        LoadP5Params(benchmarks=[{"name": "/tmp/x", "dataset": "yelp", "path": "p5"}])


def test_cli_out_that_is_a_file(shared, tmp_path):
    target = tmp_path / "out"
    target.write_text("not a folder")
    assert_failed_cleanly(ingest_cli(shared / "amazon2018" / "All_Beauty_5.json", target), 2, "is a file")


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a 64 KiB tmpfs where root may mount one, else a folder whose rejects file is
    /dev/full: either way the ingest's writes fail with ENOSPC."""
    folder = tmp_path / "disk"
    mounted = mounted_tmpfs(folder, "size=64k")
    if not mounted:
        (folder / "out").mkdir(parents=True)
        (folder / "out" / "rejects.jsonl.tmp").symlink_to("/dev/full")
    yield folder / "out"
    if mounted:
        subprocess.run(["umount", str(folder)], check=True)


def test_cli_disk_full_is_one_line_and_leaves_nothing_that_looks_complete(shared, small_disk):
    source = shared / "amazon2018" / "All_Beauty_5.json"  # 5,269 reviews: more than 64 KiB of parquet
    result = ingest_cli(source, small_disk)
    assert_failed_cleanly(result, 3, "No space left on device")
    assert "free some space" in result.stderr
    left = sorted(p.relative_to(small_disk).as_posix() for p in small_disk.rglob("*") if p.is_file() or p.is_symlink())
    assert [p for p in left if not p.startswith(".stages/")] == []


def test_cli_read_only_out(shared, tmp_path):
    folder = tmp_path / "ro"
    mounted = mounted_tmpfs(folder, "ro,size=64k")
    if not mounted:
        folder.chmod(0o555)
    try:
        result = ingest_cli(shared / "amazon2018" / "All_Beauty_5.json", folder / "out")
        assert_failed_cleanly(result, 3, "Read-only file system" if mounted else "Permission denied")
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)


def test_a_second_ingest_into_a_held_folder_is_refused(shared, tmp_path):
    from recgpt_data.io.lock import folder_lock

    out = tmp_path / "out"
    with folder_lock(out):
        result = ingest_cli(shared / "amazon2018" / "All_Beauty_5.json", out)
    assert_failed_cleanly(result, 2, "another run is writing")
    assert not (out / "summary.json").exists()
    assert ingest("amazon2018", [shared / "amazon2018" / "All_Beauty_5.json"], out).read == 5_269


def test_an_out_inside_the_input_folder_is_not_read_back(shared, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "All_Beauty_5.json").write_bytes((shared / "amazon2018" / "All_Beauty_5.json").read_bytes())
    first = ingest("amazon2018", [folder], folder / "out")
    second = ingest("amazon2018", [folder], folder / "out")
    assert first.read == second.read == 5_269
    assert all(s.startswith(str(folder / "out")) for s in second.skipped)


def publish_cli(folder: Path, repo_id: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [str(CLI), "publish", str(folder), "--repo-id", repo_id],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )


def test_cli_invalid_repo_id_is_a_usage_error(tmp_path):
    (tmp_path / "README.md").write_text("card")
    result = publish_cli(tmp_path, "../not a repo!", {"HF_TOKEN": "hf_secret_token_never_printed"})
    assert_failed_cleanly(result, 2, "is not a Hub repository id")
    assert "hf_secret_token_never_printed" not in result.stderr + result.stdout


def test_cli_unreachable_hub_is_one_line_without_the_token(tmp_path):
    (tmp_path / "README.md").write_text("card")
    env = {"HF_TOKEN": "hf_secret_token_never_printed", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"}
    result = publish_cli(tmp_path, "acme/corpus", env)
    assert_failed_cleanly(result, 4, "cannot reach the Hugging Face Hub")
    assert "hf_secret_token_never_printed" not in result.stderr + result.stdout


def test_licence_check_reads_eval_and_unattributed_files(tmp_path):
    from recgpt_data.publish.terms import UNKNOWN, restricted

    (tmp_path / "eval" / "ml1m" / "prompts").mkdir(parents=True)
    (tmp_path / "eval" / "ml1m" / "prompts" / "x.jsonl").write_text("{}\n")
    (tmp_path / "eval" / "ml1m" / "summary.json").write_text('{"source": "movielens", "dataset": "movielens/ml-1m"}')
    (tmp_path / "eval" / "unknown").mkdir()
    (tmp_path / "eval" / "unknown" / "sequential_data.txt").write_text("1 2 3\n")
    (tmp_path / "eval" / "fine").mkdir()
    (tmp_path / "eval" / "fine" / "summary.json").write_text(
        '{"source": "amazon2018", "dataset": "amazon2018/All_Beauty"}'
    )
    pl.DataFrame({"x": [1]}).write_parquet(tmp_path / "stray.parquet")
    found = sorted((t.source, t.dataset) for t in restricted(tmp_path))
    assert found == [
        (UNKNOWN, "eval/unknown (no source recorded in its summary.json)"),
        (UNKNOWN, "stray.parquet (no source and dataset columns)"),
        ("movielens", "movielens/ml-1m"),
    ]
