"""Token shards: the ``pretrain_tokens`` stage writes each published document's ids and EOS, training
memory-maps them and reads the same rows as from text tokenised in memory; steps take examples in a
seeded order, ranks read disjoint rows and run the same number of micro-steps."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from authors_pairs import authors_token_pairs
from token_shards import assert_token_shards

pytest.importorskip("torch")
pytest.importorskip("transformers")

from recgpt_train.batches import micro_batches, micro_steps, rank_bins, step_examples
from recgpt_train.config import TrainConfig
from recgpt_train.data import load_split, load_tokenizer
from recgpt_train.examples import InstructionExamples, StreamBlocks
from recgpt_train.packing import IGNORE
from recgpt_train.tokens import TokenStream, open_token_stream, tokenize_stream
from recgpt_train.train import train

REPO = Path(__file__).resolve().parent.parent
CLI = Path(__import__("sys").executable).parent / "recgpt-data"


@pytest.fixture(scope="module")
def token_corpus(demo_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo corpus with the ``pretrain_tokens`` stage run after it (the earlier stages come from cache)."""
    root = tmp_path_factory.mktemp("tokens")
    out = root / "out"
    shutil.copytree(demo_corpus, out)
    spec = root / "demo_tokens.toml"
    spec.write_text((REPO / "pipelines" / "demo.toml").read_text() + '\n[[stages]]\nstage = "pretrain_tokens"\n')
    result = subprocess.run(
        [str(CLI), "run", str(spec), "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    return out


def test_token_shards_hold_each_written_document_then_eos(token_corpus, shared):
    """A plain reading with a copy of the tokenizer outside the package (tests/token_shards.py)."""
    assert_token_shards(token_corpus, shared.parent / "tokenizers" / "gpt-neox-20b" / "tokenizer.json")


def test_memory_mapped_blocks_equal_blocks_tokenised_in_memory(token_corpus):
    mapped = open_token_stream(token_corpus, "train")
    assert isinstance(mapped.tokens[0], np.memmap)
    in_memory = tokenize_stream(load_split(token_corpus, "pretrain", "train"), load_tokenizer())
    a, b = StreamBlocks(mapped, 512, doc_masking=True), StreamBlocks(in_memory, 512, doc_masking=True)
    assert len(a) == len(b) > 20  # the demo's 11 train documents fill 24 blocks
    everything = a.bins(np.arange(len(a)))
    for x, y in zip(a.rows(everything), b.rows(everything), strict=True):
        assert np.array_equal(x, y)
    assert a.stats() == b.stats()


def test_a_stream_reads_blocks_across_shard_boundaries(token_corpus):
    """The same documents cut into three shards at document ends read as the one-shard stream."""
    whole = open_token_stream(token_corpus, "train")
    ids, ends = np.asarray(whole.tokens[0]), np.asarray(whole.ends[0])
    cuts = [0, int(ends[3]), int(ends[7]), len(ids)]
    docs = [0, 4, 8, len(ends)]
    parts = TokenStream(
        [ids[cuts[i] : cuts[i + 1]] for i in range(3)],
        [ends[docs[i] : docs[i + 1]] - cuts[i] for i in range(3)],
    )
    a, b = StreamBlocks(whole, 300, doc_masking=True), StreamBlocks(parts, 300, doc_masking=True)
    everything = a.bins(np.arange(len(a)))
    for x, y in zip(a.rows(everything), b.rows(everything), strict=True):
        assert np.array_equal(x, y)
    assert a.stats() == b.stats()


def test_training_on_token_shards_matches_training_in_memory_and_logs_validation(token_corpus, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    base = {
        "task": "pretrain",
        "model": {"preset": "tiny"},
        "data": {"source": str(token_corpus)},
        "optim": {"lr": 2e-3, "warmup_steps": 1},
        "global_batch_size": 2,
        "micro_batch_size": 1,
        "max_steps": 4,
        "precision": "fp32",
        "save_every": 1000,
        "log_every": 1,
        "eval_every": 2,
        "eval_examples": 2,
    }
    mapped = train(TrainConfig.model_validate({**base, "out_dir": str(tmp_path / "mapped")}))
    text = load_split(token_corpus, "pretrain", "train")
    in_memory = train(
        TrainConfig.model_validate({**base, "out_dir": str(tmp_path / "memory"), "eval_every": 0}), source=text
    )
    assert [r["loss"] for r in mapped] == [r["loss"] for r in in_memory]
    assert [("val_loss" in r) for r in mapped] == [False, True, False, True]
    events = EventAccumulator(str(tmp_path / "mapped" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [e.value for e in events.Scalars("train/val_loss")] == pytest.approx(
        [mapped[1]["val_loss"], mapped[3]["val_loss"]]
    )


def test_ranks_read_disjoint_rows_and_run_the_same_micro_steps(shared):
    """Seven of the authors' pairs a step over three ranks of micro-batch 2: every row to exactly one
    rank, every rank the same number of micro-steps, padding rows without targets."""
    examples = InstructionExamples(authors_token_pairs(shared), 2048, eos_id=0)
    assert len(examples) == 20
    for step in range(20 // 7):
        bins = examples.bins(step_examples(len(examples), 7, seed=3, step=step))
        assert sorted(i for b in bins for i in b) == sorted(step_examples(20, 7, 3, step).tolist())
        mine = [rank_bins(bins, rank, 3) for rank in range(3)]
        assert sorted(map(tuple, sum(mine, []))) == sorted(map(tuple, bins))
        count = micro_steps(len(bins), 3, 2)
        for rank_rows in mine:
            batches = micro_batches(examples.rows(rank_rows), count, 2, pad_id=0)
            assert len(batches) == count
            real = -(-len(rank_rows) // 2)
            for _, labels, seq in batches[real:]:
                assert (labels == IGNORE).all() and (seq == -1).all()


def test_steps_walk_each_epoch_once_in_a_seeded_order():
    epoch0 = np.concatenate([step_examples(10, 3, seed=5, step=s) for s in range(3)])
    assert len(set(epoch0.tolist())) == 9  # the last partial batch of the epoch is skipped
    assert np.array_equal(step_examples(10, 3, seed=5, step=1), epoch0[3:6])  # a step alone fixes its examples
    assert not np.array_equal(step_examples(10, 3, seed=5, step=3), epoch0[:3])  # epoch 1 reshuffles
