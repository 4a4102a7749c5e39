"""Shared test fixtures: where the real sample data lives, and skipping cleanly where it does not."""

from __future__ import annotations

import os
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
