"""``recgpt-data check``: the demo passes; a spec with one of each kind of problem gets one line per
problem and a non-zero exit, before anything is written."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

from conftest import CLI, REPO

from recgpt_data.pipeline.preflight import Preflight, check_disk

DEMO = REPO / "recgpt_data" / "demo"


def check(spec: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLI), "check", str(spec), "--out", str(out)], capture_output=True, text=True, timeout=300
    )


def test_the_demo_is_ready(tmp_path: Path) -> None:
    done = check(REPO / "pipelines" / "demo.toml", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "problem:" not in done.stderr
    assert "plan: 15 of 15 stages valid" in done.stderr
    inputs = [p.name for p in sorted(DEMO.rglob("*")) if p.suffix in (".gz", ".csv")]
    assert len(inputs) == 6
    for name in inputs:
        assert f": {name} (" in done.stderr and "kept" in done.stderr, name
    assert "ready to run" in done.stderr
    assert not (tmp_path / "out").exists()


def test_every_problem_is_one_line(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    # an Amazon 2018 file named like a 2014 one: refused by its first records
    (raw / "misnamed").mkdir()
    (raw / "misnamed" / "reviews_Magazine_Subscriptions_5.json.gz").write_bytes(
        (DEMO / "amazon2018" / "Magazine_Subscriptions_5.json.gz").read_bytes()
    )
    # real 2014 reviews without their reviewer: every first record is rejected by the real reader
    with gzip.open(DEMO / "amazon2014" / "reviews_Digital_Music_5.json.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line, _ in zip(f, range(20), strict=False)]
    (raw / "anonymous").mkdir()
    (raw / "anonymous" / "reviews_Digital_Music_5.json").write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k != "reviewerID"}) + "\n" for r in rows)
    )
    # not gzip at all under a .gz name
    (raw / "corrupt").mkdir()
    (raw / "corrupt" / "reviews_Broken_5.json.gz").write_bytes(b"this is not a gzip stream\n" * 10)
    spec = tmp_path / "broken.toml"
    spec.write_text(
        f"""name = "broken"
[[stages]]
stage = "ingest"
params.sources = [
  {{ format = "amazon2014", paths = ["{raw}/misnamed"] }},
  {{ format = "amazon2014", paths = ["{raw}/anonymous"] }},
  {{ format = "amazon2014", paths = ["{raw}/corrupt"] }},
  {{ format = "amazon2014", paths = ["{raw}/not-there"] }},
]

[[stages]]
stage = "no_such_stage"

[[stages]]
stage = "clean"
params.no_such_parameter = 1

[[stages]]
stage = "write_pretrain"
""",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    out.write_text("a file where the output folder should be")
    done = check(spec, out)
    assert done.returncode == 2, done.stderr
    problems = [line for line in done.stderr.splitlines() if line.startswith("problem:")]
    expected = [
        "'verified', a field of amazon2018 files",
        "none of its first 20 records is usable (missing_user_id 20)",
        "reviews_Broken_5.json.gz: no records in its first bytes (corrupt gzip stream",
        f"no such file or folder: {raw}/not-there",
        "stage no_such_stage: unknown stage 'no_such_stage'",
        "stage clean: bad parameters",
        "stage write_pretrain reads documents, which no earlier stage writes",
        f"output folder {out} is a file",
    ]
    assert len(problems) == len(expected), problems
    for fragment in expected:
        assert sum(fragment in line for line in problems) == 1, (fragment, problems)


def test_too_little_disk_is_a_problem(tmp_path: Path) -> None:
    report = Preflight()
    check_disk(tmp_path / "out", 1 << 40, 1e6, report)
    assert len(report.problems) == 1 and report.problems[0].startswith("disk: ")
    report = Preflight()
    check_disk(tmp_path / "out", 1 << 20, 4.0, report)
    assert not report.problems and report.notes[0].startswith("disk: ")
