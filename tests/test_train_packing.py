"""Packing: instruction rows near the lower bound, loss only on responses, concatenation wastes one block."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np
import pytest

from recgpt_data.tokenizer import load_tokenizer
from recgpt_train.packing import (
    IGNORE,
    best_fit_decreasing,
    pack_documents,
    pack_instructions,
)

EOS = 0


def _authors_pairs(shared) -> list[tuple[list[int], list[int]]]:
    tok = load_tokenizer()
    rows = [json.loads(line) for line in (shared / "recgpt_sample" / "sample_prompt_response_pairs.jsonl").open()]
    return [(tok.encode(r["prompt"] + "\n").ids, tok.encode(r["response"]).ids) for r in rows]


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
            "beauty products as follows:\n\n" + "\n".join(lines) + "\n\n### Response:\n"
        )
        pairs.append((tok.encode(prompt).ids, tok.encode(f"{reviews[-1]['overall']}/5.0").ids))
    return pairs


@pytest.mark.parametrize("build", [_authors_pairs, _beauty_rating_pairs])
def test_instruction_rows_within_two_percent_of_the_lower_bound(shared, build):
    pairs = build(shared)
    sizes = [len(p) + len(r) + 1 for p, r in pairs if len(p) + len(r) + 1 <= 2048]
    packed = pack_instructions(pairs, 2048, EOS)
    lower = math.ceil(sum(sizes) / 2048)
    assert packed.stats.packed == len(sizes)
    assert packed.stats.tokens == sum(sizes)
    assert lower <= packed.stats.rows <= 1.02 * lower + 1
    assert packed.stats.efficiency == sum(sizes) / (packed.stats.rows * 2048)


def test_authors_pairs_at_512_drop_the_fourteen_that_cannot_fit(shared):
    pairs = _authors_pairs(shared)
    packed = pack_instructions(pairs, 512, EOS)
    assert packed.stats.dropped == {"too_long": 14}
    assert packed.stats.packed == 6


def test_loss_only_on_response_and_eos_never_across_examples(shared):
    pairs = _authors_pairs(shared)
    packed = pack_instructions(pairs, 2048, EOS)
    assert packed.stats.loss_tokens == sum(len(r) + 1 for _, r in pairs)
    for ids, labels, seq in zip(packed.input_ids, packed.labels, packed.seq_ids, strict=True):
        starts = np.flatnonzero(np.diff(seq) != 0) + 1
        assert (labels[starts - 1] == IGNORE).all()  # the next example's first token is never a target
        for sid in np.unique(seq[seq >= 0]):
            where = np.flatnonzero(seq == sid)
            prompt, response = next((p, r) for p, r in pairs if len(p) + len(r) + 1 == len(where)
                                    and list(ids[where[: len(p)]]) == p)
            targets = labels[where]
            assert list(targets[len(prompt) - 1 : -1]) == [*response, EOS]
            assert (targets[: len(prompt) - 1] == IGNORE).all() and targets[-1] == IGNORE


def test_best_fit_decreasing_puts_each_item_in_the_fullest_bin_it_fits():
    assert best_fit_decreasing([6, 5, 4, 3, 2], 10) == [[0, 2], [1, 3, 4]]


def test_concatenation_drops_only_the_final_partial_block():
    docs = [[5] * 10, [6] * 7, [7] * 20]  # with EOS: 11 + 8 + 21 = 40 tokens
    packed = pack_documents(docs, 16, EOS)
    assert packed.stats.rows == 2 and packed.stats.dropped_tokens == 8
    assert list(packed.input_ids[0, 9:13]) == [5, EOS, 6, 6]
    assert list(packed.labels[0, :3]) == [5, 5, 5] and packed.labels[0, -1] == IGNORE
    assert packed.stats.efficiency == 1.0


def test_document_masking_stops_prediction_at_document_ends():
    packed = pack_documents([[5] * 10, [6] * 7, [7] * 20], 16, EOS, doc_masking=True)
    assert list(packed.seq_ids[0, 9:13]) == [0, 0, 1, 1]
    assert packed.labels[0, 10] == IGNORE  # EOS of doc 0 does not predict doc 1's first token
    assert packed.labels[0, 9] == EOS and packed.labels[0, 11] == 6


def test_instruction_set_built_from_the_real_samples_packs_near_the_lower_bound(samples_corpus):
    """The instruction pairs ``pipelines/samples.toml`` builds from ../shared/data, tokenized as the trainer does."""
    import pyarrow.parquet as pq

    tok = load_tokenizer()
    rows = pq.read_table(samples_corpus / "data" / "instruct" / "train-00000-of-00001.parquet").to_pylist()
    pairs = [(tok.encode(r["prompt"] + "\n").ids, tok.encode(r["response"]).ids) for r in rows]
    sizes = [len(p) + len(r) + 1 for p, r in pairs]
    assert len(sizes) > 500 and max(sizes) <= 2048  # the builder fits every pair in 2048 tokens
    packed = pack_instructions(pairs, 2048, EOS)
    lower = math.ceil(sum(sizes) / 2048)
    assert packed.stats.packed == len(pairs)
    assert lower <= packed.stats.rows <= 1.02 * lower + 1
