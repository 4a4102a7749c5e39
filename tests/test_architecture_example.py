"""The worked example of docs/architecture.md, run as written: its blocks become a plugin package
installed through its entry points, its spec runs through the real runner on the bundled MovieLens
slice, and the result is checked against a plain reading of that slice's CSV."""

from __future__ import annotations

import csv
import json
import re
import sys
import tomllib
from pathlib import Path

import polars as pl
import pytest
from plugin_dist import write_dist_info

from recgpt_data import stage as contract
from recgpt_data.pipeline.runner import run_spec
from recgpt_data.pipeline.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
SLICE = ROOT / "recgpt_data" / "demo" / "movielens" / "ml-latest-small"
BLOCK = re.compile(r"^```(?:python|toml)\n# file: (\S+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
PACKAGE = "recgpt_example"


def example_files() -> dict[str, str]:
    """The doc's fenced blocks that name their file, by file."""
    return {name: body for name, body in BLOCK.findall(DOC.read_text(encoding="utf-8"))}


def install(files: dict[str, str], root: Path) -> None:
    """Write the blocks under ``root`` as a package with a dist-info carrying the pyproject's entry points."""
    for name, body in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(body, encoding="utf-8")
    (root / PACKAGE / "__init__.py").write_text("")
    project = tomllib.loads(files["pyproject.toml"])["project"]
    write_dist_info(root, project["name"], project["version"], project["entry-points"])


def csv_ratings() -> list[dict[str, str]]:
    """The slice's ratings.csv, read with the csv module."""
    with (SLICE / "ratings.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example package on ``sys.path``, its stage unregistered again afterwards."""
    install(example_files(), tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
        monkeypatch.delitem(sys.modules, module)
    yield tmp_path
    contract.REGISTRY.pop("drop_low_ratings", None)


def test_the_doc_names_every_file_of_the_example() -> None:
    assert set(example_files()) == {
        "pyproject.toml",
        "example.toml",
        f"{PACKAGE}/ratings_csv.py",
        f"{PACKAGE}/low_ratings.py",
        f"{PACKAGE}/drop_low_ratings_stage.py",
    }


def test_the_worked_example_runs_as_documented(plugin: Path) -> None:
    out = plugin / "out"
    result = run_spec(load_spec(plugin / "example.toml"), out)
    assert result.states == {"ingest": "ran", "drop_low_ratings": "ran"}

    rows = csv_ratings()
    low = [r for r in rows if float(r["rating"]) < 3.0]
    kept = {(r["userId"], r["movieId"], float(r["rating"])) for r in rows if float(r["rating"]) >= 3.0}
    assert (len(rows), len(low), len(kept)) == (790, 75, 715)

    stats = json.loads((out / "stats.json").read_text())["stages"]
    assert stats["ingest"]["rows_out"]["interactions"] == 790
    assert stats["drop_low_ratings"]["dropped"] == {"rating_below_minimum": 75}
    assert stats["drop_low_ratings"]["rows_out"] == {"interactions": 715}

    stage_dir = out / ".stages" / "drop_low_ratings"
    interactions = pl.read_parquet(stage_dir / "interactions")
    assert set(interactions["dataset"].unique()) == {"ratings_csv/ml-latest-small"}
    assert set(interactions.select("user_id", "item_id", "rating").iter_rows()) == kept
    dropped = pl.read_parquet(stage_dir / "dropped_interactions")
    assert sorted(dropped["src_line"]) == sorted(i + 1 for i, r in enumerate(rows) if float(r["rating"]) < 3.0)
    assert set(dropped["drop_reason"]) == {"rating_below_minimum"}
