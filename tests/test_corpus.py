"""The pre-training corpus end to end on real Amazon 2018 data and the real P5 Beauty split:
loadable shards, exact token counts, determinism, budget, shuffle, exports and the leak check."""

from __future__ import annotations

import gzip
import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import datasets
import polars as pl
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer
from whole_stage import run_whole_here

from recgpt_data.corpus import (
    KEY,
    SHARD_SCHEMA,
    SPLITS,
    BudgetTask,
    FileTask,
    Layout,
    pieces_folder,
    plan_shards,
    read_totals,
    sample_to_budget,
    scatter,
    shard_ranges,
)
from recgpt_data.errors import UsageError
from recgpt_data.ingest import ingest
from recgpt_data.io.parquet import RowGroupWriter, write_parquet
from recgpt_data.p5.splits import held_out_rows, load_p5, p5_events
from recgpt_data.pipeline.runner import run_spec
from recgpt_data.pipeline.spec import load_spec
from recgpt_data.serialize import parse_history
from recgpt_data.stage import Context
from recgpt_data.stages.hold_out import HoldOutParams, hold_out_stage
from recgpt_data.stages.pretrain_documents import DocumentsParams, pretrain_documents_stage
from recgpt_data.stages.split import SplitParams, split_stage
from recgpt_data.stages.write_pretrain import WritePretrainParams

SEED = 11
SLICE_BYTES = 40_000  # a slice of a shard of 500 documents (some 400 KB of text): a dozen slices each


@pytest.fixture(scope="module")
def inputs(shared, tmp_path_factory) -> dict[str, pl.DataFrame]:
    """Both real Amazon 2018 5-core files with the Magazine metadata, and the P5 Beauty held-out set."""
    out = tmp_path_factory.mktemp("amazon2018")
    ingest("amazon2018", [shared / "amazon2018"], out)
    return {
        "interactions": pl.read_parquet(out / "interactions" / "**" / "*.parquet"),
        "items": pl.read_parquet(out / "items" / "**" / "*.parquet"),
        "held_out": held_out_rows(p5_events(load_p5(shared / "p5" / "beauty")), "p5_beauty", "amazon2014/Beauty"),
    }


def documents_of(inputs: dict[str, pl.DataFrame], ctx: Context) -> tuple[dict, pl.DataFrame]:
    """hold_out -> split -> pretrain_documents, wired as in a pipeline: each stage's stats and the documents."""
    held_out = inputs["held_out"].lazy()
    kept = hold_out_stage({"interactions": inputs["interactions"].lazy(), "held_out": held_out}, HoldOutParams(), ctx)
    split = split_stage({"interactions": kept.tables["interactions"].lazy(), "held_out": held_out}, SplitParams(), ctx)
    documents = pretrain_documents_stage(
        {"interactions": split.tables["interactions"].lazy(), "items": inputs["items"].lazy()},
        DocumentsParams(validation_fraction=0.02),
        ctx,
    )
    stats = {"hold_out": kept.stats, "split": split.stats, "documents": documents.stats}
    return stats, documents.tables["documents"]


def build(inputs: dict[str, pl.DataFrame], out: Path, **write) -> dict:
    """:func:`documents_of` -> write_pretrain, wired as in a pipeline; each stage's stats."""
    ctx = Context(seed=SEED, out_dir=out, scratch=out / ".scratch")
    stats, documents = documents_of(inputs, ctx)
    written = run_whole_here(
        "write_pretrain",
        {"documents": documents.lazy(), "held_out": inputs["held_out"].lazy()},
        WritePretrainParams(shard_rows=500, **write),
        ctx,
    )
    return {**stats, "write": written.stats}


@pytest.fixture(scope="module")
def corpus(inputs, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("corpus")
    return out, build(inputs, out)


def shard_files(out: Path, split: str) -> list[str]:
    return sorted(str(p) for p in (out / "data" / "pretrain").glob(f"{split}-*.parquet"))


def test_folder_layout_and_datasets_loads_the_shards(corpus):
    out, _ = corpus
    assert [Path(p).name for p in shard_files(out, "train")] == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    assert [Path(p).name for p in shard_files(out, "validation")] == ["validation-00000-of-00001.parquet"]
    loaded = datasets.load_dataset(
        "parquet",
        data_files={"train": shard_files(out, "train"), "validation": shard_files(out, "validation")},
        cache_dir=str(out.parent / "hf-cache"),
    )
    columns = {"text", "num_tokens", "source", "dataset", "user_id", "chunk_index", "num_items"}
    assert columns <= set(loaded["train"].column_names)
    manifest = json.loads((out / "manifest.json").read_text())
    assert loaded["train"].num_rows == manifest["pretrain"]["splits"]["train"]["rows"]
    assert loaded["validation"].num_rows == manifest["pretrain"]["splits"]["validation"]["rows"] > 0


def test_every_event_of_a_pretraining_user_is_in_the_corpus_once(corpus, inputs):
    out, stats = corpus
    shards = pl.read_parquet(shard_files(out, "train") + shard_files(out, "validation"))
    events = inputs["interactions"].height
    assert stats["hold_out"].dropped == {"held_out": 3}
    instruct = stats["documents"].dropped["instruct_pool"]
    assert shards["num_items"].sum() == events - 3 - instruct
    assert shards.select("dataset", "user_id", "chunk_index").is_unique().all()


def test_num_tokens_is_exact_against_an_independent_tokenizer(corpus, shared):
    out, _ = corpus
    tokenizer = Tokenizer.from_file(str(shared.parent / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"))
    shards = pl.read_parquet(shard_files(out, "train") + shard_files(out, "validation"))
    exact = [len(e.ids) for e in tokenizer.encode_batch(shards["text"].to_list(), add_special_tokens=False)]
    assert shards["num_tokens"].to_list() == exact
    assert max(exact) + 1 <= 2048


def test_documents_are_recgpt_histories(corpus):
    out, _ = corpus
    for text in pl.read_parquet(shard_files(out, "train")[0])["text"].to_list():
        noun, items = parse_history(text)
        assert noun == "products" and items


def test_manifest_counts_match_the_shards(corpus):
    out, _ = corpus
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokenizer"]["name"] == "EleutherAI/gpt-neox-20b"
    assert len(manifest["tokenizer"]["sha256"]) == 64
    for split in ("train", "validation"):
        for shard in manifest["pretrain"]["splits"][split]["shards"]:
            frame = pl.read_parquet(out / shard["path"])
            assert (shard["rows"], shard["tokens"]) == (frame.height, frame["num_tokens"].sum())
            assert frame.height <= 500
    assert manifest["pretrain"]["leak_check"] == {"held_out_pairs": 44726, "leaked": 0}


def test_rows_are_shuffled_across_datasets(corpus):
    out, _ = corpus
    first = pl.read_parquet(shard_files(out, "train")[0])["dataset"].to_list()
    runs = sum(a != b for a, b in zip(first, first[1:], strict=False))
    assert set(first) == {"amazon2018/All_Beauty", "amazon2018/Magazine_Subscriptions"}
    assert runs > 20  # datasets interleave rather than come in two blocks


def test_jsonl_export_holds_the_train_texts_in_shard_order(corpus):
    out, _ = corpus
    raw = (out / "exports" / "pretrain.jsonl.gz").read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip mtime 0
    rows = [json.loads(line) for line in gzip.decompress(raw).decode("utf-8").splitlines()]
    assert [r["text"] for r in rows] == pl.read_parquet(shard_files(out, "train"))["text"].to_list()


def test_mds_export_reads_back_with_streaming(corpus, inputs, tmp_path):
    """With the ``mds`` extra installed (it pins transformers<5, so CI's environment lacks it)."""
    streaming = pytest.importorskip("streaming")
    out, _ = corpus
    stats = build(inputs, tmp_path, mds=True)
    assert set(stats["write"].info["exports"]["mds"]) == {"train", "validation"}
    for split in ("train", "validation"):
        dataset = streaming.StreamingDataset(local=str(tmp_path / "exports" / "mds" / split), shuffle=False)
        texts = [dataset[i]["text"] for i in range(dataset.num_samples)]
        assert texts == pl.read_parquet(shard_files(out, split))["text"].to_list()


def test_mds_without_streaming_is_a_clear_error_before_any_work(inputs, tmp_path):
    if importlib.util.find_spec("streaming") is not None:
        pytest.skip("mosaicml-streaming is installed")
    with pytest.raises(UsageError, match="mosaicml-streaming"):
        build(inputs, tmp_path, mds=True)
    assert not (tmp_path / "data").exists()


def assert_same_files(out: Path, other: Path) -> None:
    """The two built folders hold the same six files (shards, export, manifest), byte for byte."""
    first = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and ".scratch" not in p.parts)
    second = sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file() and ".scratch" not in p.parts)
    assert first == second and len(first) == 6
    for relative in first:
        assert (out / relative).read_bytes() == (other / relative).read_bytes(), relative


def test_two_runs_give_byte_identical_files(corpus, inputs, tmp_path):
    out, _ = corpus
    build(inputs, tmp_path)
    assert_same_files(out, tmp_path)


def test_shards_written_a_slice_at_a_time_are_the_same_bytes(corpus, inputs, tmp_path):
    """Each shard read, sorted and written in slices of a few documents: the same files as each
    shard in one slice (the corpus fixture's)."""
    out, _ = corpus
    texts = [pl.read_parquet(path)["text"].str.len_bytes().sum() for path in shard_files(out, "train")]
    assert min(texts) > 5 * SLICE_BYTES  # several slices a shard
    build(inputs, tmp_path, slice_bytes=SLICE_BYTES)
    assert_same_files(out, tmp_path)


def test_a_split_without_documents_has_no_shards(inputs, tmp_path):
    """Every document in ``train``: no validation shard, every document in the train shards."""
    ctx = Context(seed=SEED, out_dir=tmp_path, scratch=tmp_path / ".scratch")
    _, documents = documents_of(inputs, ctx)
    documents = documents.with_columns(pl.lit("train").alias("split"))
    params = WritePretrainParams(shard_rows=500, slice_bytes=SLICE_BYTES)
    run_whole_here("write_pretrain", {"documents": documents.lazy()}, params, ctx)
    splits = json.loads((tmp_path / "manifest.json").read_text())["pretrain"]["splits"]
    assert splits["validation"] == {"rows": 0, "tokens": 0, "shards": []}
    assert splits["train"]["rows"] == pl.read_parquet(shard_files(tmp_path, "train")).height == documents.height


def test_each_piece_row_group_holds_the_keys_of_one_slice(inputs, tmp_path):
    """The scatter of two documents files: every kept document in one piece of its shard, each of
    the piece's row groups within the key range of one slice of that shard, and each slice's text
    (unless it is one document) within ``slice_bytes``."""
    _, documents = documents_of(inputs, Context(seed=SEED, out_dir=tmp_path, scratch=tmp_path / ".scratch"))
    half = documents.height // 2
    paths = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    documents.head(half).write_parquet(paths[0])
    documents.tail(documents.height - half).write_parquet(paths[1])
    layout = Layout(str(tmp_path / "scratch"), str(tmp_path / "out"), SEED)
    files = [FileTask(layout, index, str(path), batch_rows=300) for index, path in enumerate(paths)]
    assert sum(read_totals(task) for task in files) == documents.height
    plan = plan_shards(BudgetTask(layout, None, None, (), 500, 256 << 20, SLICE_BYTES))
    slices = tuple((split, tuple(map(tuple, plan.slices[split]))) for split in SPLITS)
    for task in files:
        scatter(replace(task, slices=slices))
    assert len(plan.slices["train"]) == 3 and min(map(len, plan.slices["train"])) > 5
    rows = 0
    for split in SPLITS:
        ranges = [(shard, key) for shard, keys in enumerate(plan.slices[split]) for key in keys]
        bounds = [key for _, key in ranges[1:]] + [2**64]
        texts: dict[int, int] = {}
        for shard in range(len(plan.slices[split])):
            pieces = [pq.ParquetFile(path) for path in layout.files(*pieces_folder(split, shard))]
            assert len(pieces) == 2
            for piece in pieces:
                for group in range(piece.num_row_groups):
                    table = pl.from_arrow(piece.read_row_group(group, columns=[KEY, "text"]))
                    first, last = table[KEY].min(), table[KEY].max()
                    at = next(i for i, (_, key) in enumerate(ranges) if key <= first < bounds[i])
                    assert ranges[at][0] == shard and last < bounds[at]  # one slice of this shard
                    texts[at] = texts.get(at, 0) + table["text"].str.len_bytes().sum()
                    rows += table.height
        assert len(texts) == len(ranges)
        assert all(size <= SLICE_BYTES for size in texts.values())  # these documents are below a slice
    assert rows == documents.height


def test_row_groups_are_cut_by_rows_alone_whatever_frames_they_come_in(corpus, tmp_path):
    """The train shards (over a page of text) appended in frames of uneven sizes: with no byte bound
    the same bytes as written whole; with one, row groups of at most that many text bytes holding
    the same rows."""
    out, _ = corpus
    shard = pl.read_parquet(shard_files(out, "train")).rechunk()  # one chunk, as a shard sorted whole is
    assert shard["text"].str.len_bytes().sum() > 1 << 20  # parquet's page size: pages follow the chunks
    write_parquet(shard, tmp_path / "oracle.parquet")
    frames = [shard.slice(start, length) for start, length in ((0, 7), (7, 650), (657, 1), (658, 10**6))]
    for name, max_bytes in (("whole", 1 << 30), ("bounded", 30_000)):
        with RowGroupWriter(tmp_path / f"{name}.parquet", SHARD_SCHEMA, "text", max_bytes) as writer:
            for frame in frames:
                writer.write(frame)
    assert (tmp_path / "whole.parquet").read_bytes() == (tmp_path / "oracle.parquet").read_bytes()
    bounded = pq.ParquetFile(tmp_path / "bounded.parquet")
    groups = [pl.from_arrow(bounded.read_row_group(i, columns=["text"]))["text"] for i in range(bounded.num_row_groups)]
    assert len(groups) > 5
    assert all(group.str.len_bytes().sum() <= 30_000 or group.len() == 1 for group in groups)
    assert all(
        group.str.len_bytes().sum() + following.str.len_bytes()[0] > 30_000
        for group, following in zip(groups, groups[1:])
    )
    assert pl.read_parquet(tmp_path / "bounded.parquet").equals(shard)


def test_token_budget_samples_users_deterministically_by_source_weight(corpus, inputs, tmp_path):
    out, _ = corpus
    stats = build(inputs, tmp_path, target_tokens=100_000)
    budget = stats["write"].info["budget"]["sources"]["amazon2018"]
    shards = pl.read_parquet(shard_files(tmp_path, "train") + shard_files(tmp_path, "validation"))
    assert budget["kept"] == shards["num_tokens"].sum() <= 100_000
    assert budget["kept"] > 100_000 - 2 * 2048 * 10
    assert stats["write"].dropped["budget_sampled_out"] > 0


def test_budget_splits_the_target_by_weight():
    totals = pl.DataFrame(
        {
            "source": ["a"] * 50 + ["b"] * 50,
            "dataset": ["a"] * 50 + ["b"] * 50,
            "user_id": [f"u{i}" for i in range(100)],
            "tokens": [10] * 100,
        }
    )
    kept, report = sample_to_budget(totals, 400, {"a": 3.0, "b": 1.0}, seed=2)
    assert report["sources"] == {
        "a": {"available": 500, "target": 300, "kept": 300},
        "b": {"available": 500, "target": 100, "kept": 100},
    }
    again, _ = sample_to_budget(totals, 400, {"a": 3.0, "b": 1.0}, seed=2)
    assert kept.equals(again)
    other, _ = sample_to_budget(totals, 400, {"a": 3.0, "b": 1.0}, seed=3)
    assert not kept.equals(other)
    dropped, report = sample_to_budget(totals, 400, {"a": 1.0}, seed=2)
    assert report["sources"]["b"]["kept"] == 0 and dropped["source"].unique().to_list() == ["a"]


def test_shards_are_bounded_by_rows_and_bytes():
    sizes = pl.DataFrame({"bytes": [10, 10, 10, 30, 5, 5]})
    assert shard_ranges(sizes, max_rows=2, max_bytes=1000) == [(0, 2), (2, 4), (4, 6)]
    assert shard_ranges(sizes, max_rows=100, max_bytes=30) == [(0, 3), (3, 4), (4, 6)]


def test_write_fails_when_a_held_out_pair_is_in_the_documents(inputs, tmp_path):
    ctx = Context(seed=SEED, out_dir=tmp_path)
    documents = pretrain_documents_stage(
        {"interactions": inputs["interactions"].lazy(), "items": inputs["items"].lazy()},
        DocumentsParams(),
        ctx,
    ).tables["documents"]
    with pytest.raises(AssertionError, match="held-out"):
        run_whole_here(
            "write_pretrain",
            {"documents": documents.lazy(), "held_out": inputs["held_out"].lazy()},
            WritePretrainParams(),
            ctx,
        )


def corpus_spec(folder: Path, shared: Path, partitions: int) -> Path:
    """A spec that builds the corpus from the real Amazon 2018 files with the P5 Beauty guard."""
    spec = folder / f"corpus-{partitions}.toml"
    spec.write_text(
        f"""name = "corpus"
seed = {SEED}
partitions = {partitions}

[[stages]]
stage = "ingest"
params.sources = [{{ format = "amazon2018", paths = ["{shared / "amazon2018"}"] }}]

[[stages]]
stage = "load_p5"
params.benchmarks = [
  {{ name = "p5_beauty", dataset = "amazon2014/Beauty", path = "{shared / "p5" / "beauty"}" }},
]

[[stages]]
stage = "hold_out"

[[stages]]
stage = "split"

[[stages]]
stage = "pretrain_documents"
params.validation_fraction = 0.02

[[stages]]
stage = "write_pretrain"
params.shard_rows = 500
""",
        encoding="utf-8",
    )
    return spec


def test_one_command_builds_the_same_bytes_whatever_the_user_buckets(corpus, shared, tmp_path):
    out, _ = corpus  # built in one piece by calling the stages directly
    run_spec(load_spec(corpus_spec(tmp_path, shared, partitions=3)), tmp_path / "out")
    built = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and ".scratch" not in p.parts)
    assert len(built) == 6
    for relative in built:
        assert (tmp_path / "out" / relative).read_bytes() == (out / relative).read_bytes(), relative


def test_documents_are_counted_with_the_spec_wide_tokenizer(inputs, shared, tmp_path):
    """The stage loads the tokenizer its context names: the shared copy counts as the bundled one;
    a missing file is refused."""
    tables = {"interactions": inputs["interactions"].lazy(), "items": inputs["items"].lazy()}
    shared_copy = shared.parent / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"
    chosen = pretrain_documents_stage(
        tables, DocumentsParams(), Context(seed=SEED, out_dir=tmp_path, tokenizer=shared_copy)
    ).tables["documents"]
    bundled = pretrain_documents_stage(tables, DocumentsParams(), Context(seed=SEED, out_dir=tmp_path))
    assert chosen.equals(bundled.tables["documents"])
    with pytest.raises(UsageError, match="no tokenizer.json"):
        pretrain_documents_stage(tables, DocumentsParams(), Context(tokenizer=tmp_path / "nowhere" / "tokenizer.json"))
