"""Shared test fixtures: where the real sample data lives, and skipping cleanly where it does not."""

from __future__ import annotations

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


def build(spec: str, out: Path, *args: str) -> subprocess.CompletedProcess:
    """``recgpt-data run pipelines/<spec> --out OUT ARGS``, as a user runs it."""
    command = [str(Path(sys.executable).parent / "recgpt-data"), "run", str(REPO / "pipelines" / spec), "--out", str(out), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


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
