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

SEQ_LEN = 512


@pytest.fixture(scope="module")
def packed(shared):
    """The authors' instruction pairs that fit 512 tokens, packed into rows (real token ids)."""
    tok = load_tokenizer()
    rows = [json.loads(line) for line in (shared / "recgpt_sample" / "sample_prompt_response_pairs.jsonl").open()]
    pairs = [(tok.encode(r["prompt"] + "\n").ids, tok.encode(r["response"]).ids) for r in rows]
    out = pack_instructions(pairs, SEQ_LEN, eos_id=0)
    assert out.stats.rows < out.stats.packed  # at least one row holds several examples
    return out


@pytest.fixture(scope="module")
def model():
    # 6 heads: not a power of two, so MPT's interleaved slope order is exercised too.
    return build_model(mpt_config("tiny", n_heads=6, d_model=96, n_layers=3), seed=5).eval()


def _worst_gap(model, packed) -> float:
    worst = 0.0
    with torch.no_grad():
        for r in range(len(packed)):
            ids = torch.from_numpy(packed.input_ids[r : r + 1])
            seq = torch.from_numpy(packed.seq_ids[r : r + 1])
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
    assert _worst_gap(model, packed) < 1e-5


def test_without_the_block_mask_examples_contaminate_each_other(model, packed):
    """The control: one sequence id for the whole row lets later examples see earlier ones."""
    set_attention(model, "sdpa")
    r = int((packed.seq_ids.max(axis=1) >= 1).argmax())  # a row holding two examples or more
    ids = torch.from_numpy(packed.input_ids[r : r + 1])
    seq = torch.from_numpy(packed.seq_ids[r : r + 1])
    second = (seq[0] == 1).nonzero().flatten()
    with torch.no_grad():
        leaky = packed_logits(model, ids, torch.zeros_like(seq))[0, second]
        alone = packed_logits(model, ids[:, second], torch.zeros_like(ids[:, second]))[0]
    assert (leaky - alone).abs().max().item() > 1e-3


def test_hf_forward_without_mask_equals_single_example_path(model, packed):
    set_attention(model, "eager")
    ids = torch.from_numpy(packed.input_ids[:1, :100])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        ours = packed_logits(model, ids, torch.zeros_like(ids))
    assert torch.equal(plain, ours)


@pytest.mark.parametrize("n_heads", [4, 6, 32])
def test_alibi_slopes_follow_mpt_layout(n_heads):
    hf = build_mpt_alibi_tensor(n_heads, 2)  # (heads, 1, 2): [-slope, 0]
    assert torch.allclose(-hf[:, 0, 0], alibi_slopes(n_heads))


def test_activation_checkpointing_keeps_the_sdpa_gradients(packed):
    ids = torch.from_numpy(packed.input_ids[:1])
    seq = torch.from_numpy(packed.seq_ids[:1])
    grads = []
    for checkpointing in (False, True):
        net = build_model(mpt_config("tiny", n_layers=2), seed=7).train()
        set_attention(net, "sdpa")
        if checkpointing:
            enable_activation_checkpointing(net)
        packed_logits(net, ids, seq).float().pow(2).mean().backward()
        grads.append(net.transformer.blocks[0].attn.Wqkv.weight.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-7)
