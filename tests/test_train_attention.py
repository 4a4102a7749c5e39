"""Packed rows never leak attention across examples: each example's logits equal its logits alone."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers.models.mpt.modeling_mpt import build_mpt_alibi_tensor

from recgpt_data.tokenizer import load_tokenizer
from recgpt_train.attention import alibi_slopes, packed_logits, set_attention
from recgpt_train.model import build_model, enable_activation_checkpointing, mpt_config
from recgpt_train.packing import pack_instructions


@pytest.fixture(scope="module")
def pairs(shared) -> list[tuple[list[int], list[int]]]:
    """The authors' 20 instruction pairs as real token ids."""
    tok = load_tokenizer()
    rows = [json.loads(line) for line in (shared / "recgpt_sample" / "sample_prompt_response_pairs.jsonl").open()]
    return [(tok.encode(r["prompt"] + "\n").ids, tok.encode(r["response"]).ids) for r in rows]


@pytest.fixture(scope="module")
def packed(pairs):
    """The 12 pairs that fit 1024 tokens, packed into 7 rows; 4 rows hold two or three examples."""
    out = pack_instructions(pairs, 1024, eos_id=0)
    assert (out.stats.packed, out.stats.rows) == (12, 7)
    return out


@pytest.fixture(scope="module")
def model():
    # 6 heads: not a power of two, so MPT's interleaved slope order is exercised too.
    return build_model(mpt_config("tiny", n_heads=6, d_model=96, n_layers=3, max_seq_len=2048), seed=5).eval()


def _worst_gap(model, packed, rows: list[int]) -> float:
    worst = 0.0
    with torch.no_grad():
        for r in rows:
            ids = torch.from_numpy(packed.input_ids[r : r + 1]).long()
            seq = torch.from_numpy(packed.seq_ids[r : r + 1]).long()
            together = packed_logits(model, ids, seq)[0]
            for sid in seq.unique().tolist():
                if sid < 0:
                    continue
                where = (seq[0] == sid).nonzero().flatten()
                alone_ids = ids[:, where]
                alone = packed_logits(model, alone_ids, torch.zeros_like(alone_ids))[0]
                worst = max(worst, (together[where] - alone).abs().max().item())
    return worst


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_each_packed_example_matches_its_logits_alone(model, packed, impl):
    set_attention(model, impl)
    shared_rows = [r for r in range(len(packed)) if packed.seq_ids[r].max() >= 1]
    assert len(shared_rows) == 4
    assert _worst_gap(model, packed, shared_rows) < 1e-5


def test_sdpa_matches_alone_on_a_full_2048_token_row(model, pairs):
    """Hugging Face's eager bias is key-only, up to slope * 2047 in magnitude, and its float32 rounding
    reaches ~1.5e-5 at this length; the relative bias of the SDPA path stays well below 1e-5."""
    packed = pack_instructions(pairs, 2048, eos_id=0)
    fullest = int(packed.seq_ids.max(axis=1).argmax())
    assert packed.seq_ids[fullest].max() == 3  # four examples in one row
    set_attention(model, "sdpa")
    assert _worst_gap(model, packed, [fullest]) < 1e-5


def test_without_the_block_mask_examples_contaminate_each_other(model, packed):
    """The control: one sequence id for the whole row lets later examples see earlier ones."""
    set_attention(model, "sdpa")
    r = int((packed.seq_ids.max(axis=1) >= 1).argmax())  # a row holding two examples or more
    ids = torch.from_numpy(packed.input_ids[r : r + 1]).long()
    seq = torch.from_numpy(packed.seq_ids[r : r + 1]).long()
    second = (seq[0] == 1).nonzero().flatten()
    with torch.no_grad():
        leaky = packed_logits(model, ids, torch.zeros_like(seq))[0, second]
        alone = packed_logits(model, ids[:, second], torch.zeros_like(ids[:, second]))[0]
    assert (leaky - alone).abs().max().item() > 1e-3


def test_hf_forward_without_mask_equals_single_example_path(model, packed):
    set_attention(model, "eager")
    ids = torch.from_numpy(packed.input_ids[:1, :100]).long()
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        ours = packed_logits(model, ids, torch.zeros_like(ids))
    assert torch.equal(plain, ours)


@pytest.mark.parametrize("n_heads", [4, 6, 32])
def test_alibi_slopes_follow_mpt_layout(n_heads):
    hf = build_mpt_alibi_tensor(n_heads, 2)  # (heads, 1, 2): [-slope, 0]
    assert torch.allclose(-hf[:, 0, 0], alibi_slopes(n_heads))


def test_activation_checkpointing_keeps_the_sdpa_gradients(packed):
    ids = torch.from_numpy(packed.input_ids[:1]).long()
    seq = torch.from_numpy(packed.seq_ids[:1]).long()
    grads = []
    for checkpointing in (False, True):
        net = build_model(mpt_config("tiny", n_layers=2, max_seq_len=1024), seed=7).train()
        set_attention(net, "sdpa")
        if checkpointing:
            enable_activation_checkpointing(net)
        packed_logits(net, ids, seq).float().pow(2).mean().backward()
        grads.append(net.transformer.blocks[0].attn.Wqkv.weight.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-7)
