"""Shared test fixtures: where the real sample data lives, and skipping cleanly where it does not."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("RECGPT_SHARED_DATA", REPO.parent / "shared" / "data"))
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def shared() -> Path:
    """The real public samples (../shared/data); tests that need them skip where they are absent."""
    if not SHARED.is_dir():
        pytest.skip(f"real sample data not found at {SHARED} (set RECGPT_SHARED_DATA)")
    return SHARED


@pytest.fixture(scope="session")
def fixtures() -> Path:
    """Faithful hand-written fixtures for formats with no real sample (see tests/fixtures/README.md)."""
    return FIXTURES


CLI = Path(sys.executable).parent / "recgpt-data"  # the console command the install made


def mounted_tmpfs(target: Path, options: str) -> bool:
    """Mount a tmpfs at ``target`` (as root); False where this machine does not let us."""
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, check=False
    )
    return done.returncode == 0


def assert_failed_cleanly(result: subprocess.CompletedProcess, status: int, words: str) -> None:
    """A CLI run that failed with exit ``status`` and one ``error:`` line saying ``words``, no traceback."""
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert words in line


def build(spec: str, out: Path, *args: str) -> subprocess.CompletedProcess:
    """``recgpt-data run pipelines/<spec> --out OUT ARGS``, as a user runs it."""
    command = [str(CLI), "run", str(REPO / "pipelines" / spec), "--out", str(out), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


def folder_digests(out: Path) -> dict[str, str]:
    """sha256 of every file of a built folder but the run's timings (stats.json) and the runner's
    hidden state: what two builds of the same inputs must agree on."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and not p.relative_to(out).parts[0].startswith(".") and p.name != "stats.json"
    }


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's main job, built once: ``pipelines/demo.toml`` on the bundled real slices."""
    out = tmp_path_factory.mktemp("demo") / "out"
    result = build("demo.toml", out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def samples_corpus(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pipelines/samples.toml`` over every real sample in ../shared/data, built once."""
    out = tmp_path_factory.mktemp("samples") / "out"
    result = build("samples.toml", out, "--var", f"shared={shared}")
    assert result.returncode == 0, result.stderr
    return out
