"""Warnings of a run on real samples: heuristic rules that remove more than 5% of a dataset, stages
that drop nearly all of one, a dataset ingested without its metadata; and blanked values kept for
inspection. Expected numbers come from plain readings of the raw files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import polars as pl
import pytest
from conftest import CLI
from plain_dedup import copies_on_one_item

from recgpt_data.pipeline.dropped import dropped_rows


def reviews(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run(spec: str, out: Path) -> subprocess.CompletedProcess:
    path = out.parent / f"{out.name}.toml"
    path.write_text(spec, encoding="utf-8")
    return subprocess.run([str(CLI), "run", str(path), "--out", str(out)], capture_output=True, text=True, timeout=600)


def one_line(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


INGEST = """name = "{name}"
seed = 3
partitions = 2

[[stages]]
stage = "ingest"
params.sources = [
  {{ format = "amazon2018", paths = ["{shared}/amazon2018/All_Beauty_5.json"] }},{extra}
]
"""


@pytest.fixture(scope="module")
def warned(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """All Beauty without its metadata and the bundled Digital Music slice with its own, through
    dedup, a language filter that keeps only German (so it blanks nearly every text it judges),
    clean, documents and the card."""
    spec = INGEST.format(
        name="warned",
        shared=shared,
        extra='\n  { format = "amazon2014", paths = ["demo:amazon2014"] },',
    )
    spec += "".join(
        f'\n[[stages]]\nstage = "{name}"\n{params}'
        for name, params in (
            ("clean_items", ""),
            ("dedup", "params.users = false\n"),
            ("langid", 'params.allowed = ["de"]\n'),
            ("clean", ""),
            ("pretrain_documents", "params.validation_fraction = 0.0\n"),
            ("write_pretrain", ""),
            ("card", ""),
        )
    )
    out = tmp_path_factory.mktemp("warned") / "out"
    result = run(spec, out)
    assert result.returncode == 0, result.stderr
    return out, result


DIGITAL_MUSIC = 145  # reviews of the bundled Digital Music slice (recgpt_data/demo/PROVENANCE.md)


def by_kind(out: Path, kind: str) -> dict[tuple[str, str, str], dict]:
    found = json.loads((out / "stats.json").read_text())["warnings"]
    return {(w["stage"], w["dataset"], w.get("reason")): w for w in found if w["kind"] == kind}


def test_a_heuristic_rule_over_five_percent_is_warned(warned, shared: Path) -> None:
    """dedup drops All Beauty's copies of one review on one ASIN: 1,053 of 5,269 rows by a plain
    count, over 5%; Digital Music has none, so no warning names it for that rule."""
    out, result = warned
    raw = reviews(shared / "amazon2018" / "All_Beauty_5.json")
    copies = copies_on_one_item(raw)
    assert copies == 1053
    heuristic = by_kind(out, "heuristic")
    warning = heuristic["dedup", "amazon2018/All_Beauty", "variant_duplicate"]
    assert (warning["rows"], warning["of"], warning["table"]) == (copies, len(raw), "interactions")
    assert warning["message"].startswith("dedup: the heuristic rule variant_duplicate dropped 1,053 of 5,269 (20.0%)")
    assert ("dedup", "amazon2014/Digital_Music", "variant_duplicate") not in heuristic
    assert one_line(warning["message"]) in one_line(result.stderr)
    card = (out / "README.md").read_text()
    assert f"- {warning['message']}" in card


def test_blanked_values_are_kept_and_warned(warned, shared: Path) -> None:
    """Every value langid and dedup blanked is kept with its keys and original text; a dataset is
    warned about exactly where that is over 5% of its rows (dedup sees every ingested row, langid
    those dedup kept), with the numbers the kept rows give."""
    out, _ = warned
    beauty = len(reviews(shared / "amazon2018" / "All_Beauty_5.json"))
    rows_in = {
        "dedup": {"amazon2018/All_Beauty": beauty, "amazon2014/Digital_Music": DIGITAL_MUSIC},
        "langid": {"amazon2018/All_Beauty": beauty - 1053, "amazon2014/Digital_Music": DIGITAL_MUSIC},
    }
    stats = json.loads((out / "stats.json").read_text())
    heuristic = by_kind(out, "heuristic")
    kept = {item.stage: item for item in dropped_rows(out, blanked=True)}
    assert set(kept) == {"dedup", "langid"}
    for stage, reason in (("dedup", "review_text_duplicate"), ("langid", "review_text:language_not_allowed")):
        rows = kept[stage].rows.collect()
        assert rows.height == stats["stages"][stage]["changed"][reason] > 0
        assert rows["original"].null_count() == 0 and set(rows["blanked_column"]) == {"review_text"}
        for dataset, n in rows.group_by("dataset").len().iter_rows():
            warning = heuristic.get((stage, dataset, reason))
            if n > 0.05 * rows_in[stage][dataset]:
                assert (warning["rows"], warning["of"]) == (n, rows_in[stage][dataset])
            else:
                assert warning is None
    export = out.parent / "blanked.parquet"
    command = [str(CLI), "dropped", str(out), "--blanked", "--stage", "langid", "--export", str(export)]
    assert subprocess.run(command, capture_output=True, text=True, timeout=300).returncode == 0
    assert pl.read_parquet(export).height == stats["stages"]["langid"]["changed"]["review_text:language_not_allowed"]
    ingested = pl.scan_parquet(out / ".stages" / "ingest" / "interactions" / "*.parquet")
    original = kept["langid"].rows.join(ingested, on=["dataset", "src_file", "src_line"], how="inner").collect()
    assert original.height == kept["langid"].rows.collect().height
    assert (original["original"] != original["review_text"]).sum() == 0  # no stage before langid rewrote texts here


def test_a_stage_dropping_nearly_all_of_a_dataset_is_warned(warned) -> None:
    """clean drops every All Beauty interaction left after dedup (5,269 - 1,053): no item has a title;
    ingest said so first."""
    out, result = warned
    (warning,) = by_kind(out, "mass_drop").values()
    assert (warning["stage"], warning["dataset"], warning["rows"], warning["of"]) == (
        "clean",
        "amazon2018/All_Beauty",
        4216,
        4216,
    )
    assert warning["reasons"] == {"interaction_item_without_title": 4216}
    said = [w["message"] for w in json.loads((out / "stats.json").read_text())["warnings"] if w["kind"] == "stage"]
    assert [m for m in said if "All_Beauty" in m] == [
        "ingest: amazon2018/All_Beauty: 5,269 interactions and no items (no metadata file was read for it, or none of "
        "its records was kept); `clean` drops the interactions of items without a title, so it will drop all of these"
    ]
    assert "## Warnings" in (out / "README.md").read_text()
    assert one_line(warning["message"]) in one_line(result.stderr)


def test_the_card_names_the_real_cause_when_nothing_is_left(shared: Path, tmp_path: Path) -> None:
    spec = INGEST.format(name="no_meta", shared=shared, extra="")
    spec += "".join(f'\n[[stages]]\nstage = "{name}"\n' for name in ("clean_items", "clean", "card"))
    result = run(spec, tmp_path / "out")
    assert result.returncode == 2
    message = one_line(result.stderr)
    assert "card: the run left no rows to write" in message
    assert "amazon2018/All_Beauty: 5,269 interactions and no items" in message
    assert (
        "clean dropped 5,269 of 5,269 (100.0%) interactions of amazon2018/All_Beauty: interaction_item_without_title"
        in message
    )


def test_ingest_warns_of_a_dataset_without_items(shared: Path, tmp_path: Path) -> None:
    path = shared / "amazon2018" / "All_Beauty_5.json"
    result = subprocess.run(
        [str(CLI), "ingest", "amazon2018", str(path), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    n = len(path.read_text(encoding="utf-8").splitlines())
    expected = f"amazon2018/All_Beauty: {n:,} interactions and no items"
    assert expected in one_line(result.stderr)
    (warning,) = json.loads((tmp_path / "summary.json").read_text())["warnings"]
    assert warning.startswith(expected)
