"""``recgpt-data gc``: after a detour through another bucket count and a renamed stage, it deletes
exactly the intermediates the demo spec no longer needs; the final folder stays byte for byte, and
a run after it has nothing to do."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from conftest import CLI, REPO, build, folder_digests

from recgpt_data.pipeline.runner import run_spec
from recgpt_data.pipeline.spec import load_spec

DEMO_SPEC = REPO / "pipelines" / "demo.toml"


def files(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


def gc(out: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(CLI), "gc", str(out), "--spec", str(DEMO_SPEC), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_gc_deletes_what_no_current_stage_needs(demo_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(demo_corpus, out)
    # the detour: three buckets, and `clean` under another id
    detour = tmp_path / "detour.toml"
    text = DEMO_SPEC.read_text(encoding="utf-8").replace("partitions = 2", "partitions = 3")
    detour.write_text(text.replace('stage = "clean"\n', 'stage = "clean"\nid = "clean_v2"\n'), encoding="utf-8")
    assert subprocess.run([str(CLI), "run", str(detour), "--out", str(out), "--until", "clean_v2"]).returncode == 0
    back = build("demo.toml", out)
    assert back.returncode == 0, back.stderr
    final = folder_digests(out)
    before = files(out)
    listed = gc(out, "--dry-run")
    assert listed.returncode == 0, listed.stderr
    assert files(out) == before
    assert "clean_v2" in listed.stdout and "not in the spec" in listed.stdout

    done = gc(out)
    assert done.returncode == 0, done.stderr
    deleted = before - files(out)
    expected_groups = {
        ".stages/clean_v2",  # a stage the spec no longer has
        ".stages/ingest/_buckets/interactions-user_id-3",  # the cut for three user buckets
    }
    groups = {path.rsplit("/", 1)[0] if "_buckets" in path else "/".join(path.split("/")[:2]) for path in deleted}
    assert groups == expected_groups
    assert {p for p in before if p.startswith(".stages/clean_v2/")} <= deleted
    assert folder_digests(out) == final

    result = run_spec(load_spec(DEMO_SPEC), out)
    assert set(result.states.values()) == {"cached"}
    assert folder_digests(out) == final
