"""The ``clean_items`` stage cleaning chunks of rows in worker processes writes the items and the
dropped items one process cleaning the whole table wrote (the stage's former code, its rules
applied to the whole table here), in the same order, and counts the same changes and drops."""

from __future__ import annotations

import polars as pl

from recgpt_data.clean import item_tasks
from recgpt_data.clean.filters import drop_untitled_items
from recgpt_data.clean.text import clean_frame
from recgpt_data.engines.local import LocalEngine
from recgpt_data.pipeline.runner import run_spec
from recgpt_data.pipeline.spec import load_spec
from recgpt_data.stages.clean_items import CleanItemsParams

CHUNK_ROWS = 500


def test_chunks_in_two_workers_clean_as_one_process(shared, tmp_path, monkeypatch) -> None:
    raw = shared / "amazon2018"
    meta = f"{raw}/meta_Magazine_Subscriptions.json.gz"
    lines = ['name = "clean-items-chunks"', "[[stages]]", 'stage = "ingest"']
    lines += [f'params.sources = [{{ format = "amazon2018", paths = ["{meta}"] }}]', "[[stages]]"]
    lines += ['stage = "clean_items"']
    (tmp_path / "spec.toml").write_text("\n".join(lines), encoding="utf-8")
    monkeypatch.setattr(item_tasks, "CHUNK_ROWS", CHUNK_ROWS)
    engine = LocalEngine(workers=2, threads=1)
    try:
        spec = load_spec(tmp_path / "spec.toml")
        run_spec(spec, tmp_path / "out", until="ingest")
        result = run_spec(spec, tmp_path / "out", engine=engine)
    finally:
        engine.close()
    items = pl.read_parquet(sorted((tmp_path / "out" / ".stages" / "ingest" / "items").glob("*.parquet")))
    assert items.height > 4 * CHUNK_ROWS
    params = CleanItemsParams()
    frame, counts = clean_frame(items, params.columns, max_chars=params.max_chars)
    titled = drop_untitled_items(frame)
    stage = tmp_path / "out" / ".stages" / "clean_items"
    assert result.tables["items"].collect().equals(titled.frame)
    dropped = pl.read_parquet(sorted((stage / "dropped_items").glob("*.parquet")))
    assert dropped.equals(titled.drops.tables()["items"])
    stats = result.stats["clean_items"]
    assert stats["changed"] == {f"items.{reason}": n for reason, n in sorted(counts.items())}
    assert stats["dropped"] == dict(titled.drops.dropped) and stats["dropped"]["item_without_title"] > 0
    assert stats["rows_in"]["items"] == items.height and stats["rows_out"]["items"] == titled.frame.height
