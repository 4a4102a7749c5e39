"""The real Amazon 2018 Magazine Subscriptions sample (5-core reviews and metadata) ingested into a
folder, the input several library tests start from."""

from __future__ import annotations

from pathlib import Path

from recgpt_data.ingest import ingest


def ingest_magazines(shared: Path, out: Path) -> Path:
    """Ingest the sample into ``out`` (``interactions/`` and ``items/`` parquet); returns ``out``."""
    folder = shared / "amazon2018"
    ingest(
        "amazon2018", [folder / "Magazine_Subscriptions_5.json", folder / "meta_Magazine_Subscriptions.json.gz"], out
    )
    return out
