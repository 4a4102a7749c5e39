"""The hostile-input corpus through the ingest driver: every case ends as written in
``hostile_cases.py`` (kept with exact values, rejected with its reason, or refused with one line),
never with another exception; read = kept + rejected for every file; a refused or failed ingest
leaves nothing that looks complete; and docs/sources.md states the corpus's size."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from hostile_cases import Case, Kept, Rejected, all_cases, case_count

from recgpt_data.errors import UsageError
from recgpt_data.ingest import ingest

CASES = all_cases()
DOCS = Path(__file__).resolve().parents[2] / "docs" / "sources.md"


def write_inputs(case: Case, folder: Path) -> None:
    for relative, data in case.files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def assert_nothing_complete(out: Path) -> None:
    """A refused or failed ingest: no summary, no rejects, no parquet, no temporary file."""
    left = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert [p for p in left if not p.startswith(".stages/")] == []


def assert_records(case: Case, out: Path, summary: dict) -> None:
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    for (name, table), outcomes in case.records.items():
        (file,) = [f for f in summary["files"] if Path(f["file"]).name == name and f["table"] == table]
        expected_rejects = [(n, o.reason) for n, o in enumerate(outcomes, 1) if isinstance(o, Rejected)]
        kept = [(n, o) for n, o in enumerate(outcomes, 1) if isinstance(o, Kept)]
        assert file["read"] == len(outcomes)
        assert file["kept"] == len(kept)
        assert file["rejected"] == dict(Counter(reason for _, reason in expected_rejects))
        if sum(Path(f["file"]).name == name for f in summary["files"]) == 1:  # rejects.jsonl names no table
            assert sorted((r["line"], r["reason"]) for r in rejects if Path(r["file"]).name == name) == expected_rejects
        assert file["truncated"] == (name in case.truncated)
        (parquet,) = out.glob(f"{table}/**/{name}.parquet")
        rows = pl.read_parquet(parquet)  # written in file order
        if table == "interactions":
            assert rows["src_line"].to_list() == [n for n, _ in kept]
        assert rows.height == len(kept)
        for (line, outcome), row in zip(kept, rows.iter_rows(named=True)):
            assert {k: row[k] for k in outcome.values} == outcome.values, f"record {line}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_case(case: Case, tmp_path: Path) -> None:
    write_inputs(case, tmp_path / "in")
    out = tmp_path / "out"
    if case.refused is not None:
        with pytest.raises(UsageError) as refused:
            ingest(case.format, [tmp_path / "in"], out, dataset=case.dataset)
        message = str(refused.value)
        assert case.refused in message
        assert "\n" not in message and len(message) < 1000
        assert_nothing_complete(out)
        return
    summary = ingest(case.format, [tmp_path / "in"], out, dataset=case.dataset).to_dict()
    assert summary == json.loads((out / "summary.json").read_text(encoding="utf-8"))
    for f in summary["files"]:
        assert f["read"] == f["kept"] + sum(f["rejected"].values())
    assert not list(out.rglob("*.tmp"))
    assert_records(case, out, summary)


def test_the_corpus_covers_every_format_and_the_docs_state_its_size() -> None:
    from recgpt_data.sources import FORMATS

    assert {c.format for c in CASES} == set(FORMATS)
    total = case_count()
    assert total >= 300
    stated = re.search(r"handled (\d[\d,]*) of (\d[\d,]*)", DOCS.read_text(encoding="utf-8"))
    assert stated is not None and stated.group(1) == stated.group(2) == f"{total:,}"
