"""Packing: instruction rows near the lower bound, loss only on responses, concatenation wastes one block.

Pairs are tokenised as the trainer does and as llm-foundry's finetuning loader does: prompt and response
encoded apart and joined with nothing between them."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np
import pytest
from authors_pairs import authors_token_pairs

from recgpt_data.tokenizer import load_tokenizer
from recgpt_train.examples import InstructionExamples, StreamBlocks
from recgpt_train.packing import IGNORE, best_fit_decreasing
from recgpt_train.tokens import TokenStream

EOS = 0


def pack_all(pairs, seq_len):
    """Every pair that fits, packed in one go: (input_ids, labels, seq_ids, stats)."""
    examples = InstructionExamples(pairs, seq_len, EOS)
    return (*examples.rows(examples.bins(np.arange(len(examples)))), examples.stats())


def blocks(docs, seq_len, doc_masking=False) -> StreamBlocks:
    """Documents (each followed by EOS) as one in-memory stream cut into blocks."""
    flat = np.array([t for d in docs for t in (*d, EOS)], dtype=np.int32)
    return StreamBlocks(TokenStream([flat], [np.cumsum([len(d) + 1 for d in docs])]), seq_len, doc_masking)


def _beauty_rating_pairs(shared) -> list[tuple[list[int], list[int]]]:
    """Rating-prediction pairs in the authors' format from every user of the real 2018 All_Beauty 5-core."""
    users: dict[str, list[dict]] = defaultdict(list)
    for line in (shared / "amazon2018" / "All_Beauty_5.json").open():
        review = json.loads(line)
        users[review["reviewerID"]].append(review)
    tok = load_tokenizer()
    pairs = []
    for reviews in users.values():
        reviews.sort(key=lambda r: r["unixReviewTime"])
        lines = [f"Review: {' '.join(r.get('reviewText', '').split())}; Rating: {r['overall']}/5.0" for r in reviews]
        lines[-1] = lines[-1].rsplit("; Rating:", 1)[0]
        prompt = (
            "### Instruction:\nPredict rating for the last item.\nGiven the interaction history of a user with "
            "beauty products as follows:\n\n" + "\n".join(lines) + "\n\n### Response:"
        )
        pairs.append((tok.encode(prompt).ids, tok.encode(f"{reviews[-1]['overall']}/5.0").ids))
    return pairs


@pytest.mark.parametrize("build", [authors_token_pairs, _beauty_rating_pairs])
def test_instruction_rows_within_two_percent_of_the_lower_bound(shared, build):
    pairs = build(shared)
    sizes = [len(p) + len(r) + 1 for p, r in pairs if len(p) + len(r) + 1 <= 2048]
    *_, stats = pack_all(pairs, 2048)
    lower = math.ceil(sum(sizes) / 2048)
    assert stats.packed == len(sizes)
    assert stats.tokens == sum(sizes)
    assert lower <= stats.rows <= 1.02 * lower + 1
    assert stats.efficiency == sum(sizes) / (stats.rows * 2048)


def testauthors_token_pairs_at_512_drop_the_fourteen_that_cannot_fit(shared):
    pairs = authors_token_pairs(shared)
    *_, stats = pack_all(pairs, 512)
    assert stats.dropped == {"too_long": 14}
    assert stats.packed == 6


def test_loss_only_on_response_and_eos_never_across_examples(shared):
    pairs = authors_token_pairs(shared)
    input_ids, all_labels, seq_ids, stats = pack_all(pairs, 2048)
    assert stats.loss_tokens == sum(len(r) + 1 for _, r in pairs)
    for ids, labels, seq in zip(input_ids, all_labels, seq_ids, strict=True):
        starts = np.flatnonzero(np.diff(seq) != 0) + 1
        assert (labels[starts - 1] == IGNORE).all()  # the next example's first token is never a target
        for sid in np.unique(seq[seq >= 0]):
            where = np.flatnonzero(seq == sid)
            prompt, response = next(
                (p, r) for p, r in pairs if len(p) + len(r) + 1 == len(where) and list(ids[where[: len(p)]]) == p
            )
            targets = labels[where]
            assert list(targets[len(prompt) - 1 : -1]) == [*response, EOS]
            assert (targets[: len(prompt) - 1] == IGNORE).all() and targets[-1] == IGNORE


def test_best_fit_decreasing_puts_each_item_in_the_fullest_bin_it_fits():
    assert best_fit_decreasing([6, 5, 4, 3, 2], 10) == [[0, 2], [1, 3, 4]]


def test_concatenation_drops_only_the_final_partial_block():
    docs = [[5] * 10, [6] * 7, [7] * 20]  # with EOS: 11 + 8 + 21 = 40 tokens
    cut = blocks(docs, 16)
    ids, labels, _ = cut.rows(cut.bins(np.arange(len(cut))))
    stats = cut.stats()
    assert stats.rows == 2 and stats.dropped_tokens == 8 and stats.packed == 2
    assert list(ids[0, 9:13]) == [5, EOS, 6, 6]
    assert list(labels[0, :3]) == [5, 5, 5] and labels[0, -1] == IGNORE
    assert stats.efficiency == 1.0 and stats.loss_tokens == 2 * 15


def test_document_masking_stops_prediction_at_document_ends():
    cut = blocks([[5] * 10, [6] * 7, [7] * 20], 16, doc_masking=True)
    ids, labels, seq = cut.rows(cut.bins(np.arange(len(cut))))
    assert list(seq[0, 9:13]) == [0, 0, 1, 1]
    assert labels[0, 10] == IGNORE  # EOS of doc 0 does not predict doc 1's first token
    assert labels[0, 9] == EOS and labels[0, 11] == 6
    assert list(seq[1, :4]) == [0, 0, 0, 1]  # row 1 starts inside doc 1 (ids restart per row), doc 2 at 19
    assert cut.stats().loss_tokens == 2 * 15 - 2  # doc ends at 11 and 19 cut one prediction each


def test_instruction_set_built_from_the_real_samples_packs_near_the_lower_bound(samples_corpus):
    """The instruction pairs ``pipelines/samples.toml`` builds from ../shared/data, tokenized as the trainer does."""
    import pyarrow.parquet as pq

    tok = load_tokenizer()
    rows = pq.read_table(samples_corpus / "data" / "instruct" / "train-00000-of-00001.parquet").to_pylist()
    pairs = [(tok.encode(r["prompt"]).ids, tok.encode(r["response"]).ids) for r in rows]
    sizes = [len(p) + len(r) + 1 for p, r in pairs]
    assert len(sizes) > 400 and max(sizes) <= 2048  # the builder fits every pair in 2048 tokens
    *_, stats = pack_all(pairs, 2048)
    lower = math.ceil(sum(sizes) / 2048)
    assert stats.packed == len(pairs)
    assert lower <= stats.rows <= 1.02 * lower + 1
