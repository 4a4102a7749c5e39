"""A package's ``.dist-info`` written by hand, as an installer leaves it, so that a plugin package
put on ``sys.path`` in a test is found through its entry points (``importlib.metadata``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def write_dist_info(root: Path, name: str, version: str, entry_points: Mapping[str, Mapping[str, str]]) -> Path:
    """``root/<name>-<version>.dist-info`` with its METADATA and ``entry_points.txt`` (``{group: {key:
    "module"}}``); returns the folder."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    groups = "".join(
        f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in entries.items())
        for group, entries in entry_points.items()
    )
    (info / "entry_points.txt").write_text(groups)
    return info
