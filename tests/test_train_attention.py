"""Packed rows never leak attention across examples: each example's logits equal its logits alone, on every
attention path (flex attention runs its forward uncompiled on the CPU; torch has no CPU backward for it)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import numpy as np
from authors_pairs import authors_token_pairs
from transformers.models.mpt.modeling_mpt import build_mpt_alibi_tensor

from recgpt_train.attention import alibi_slopes
from recgpt_train.examples import InstructionExamples
from recgpt_train.model import PackedMpt, build_model, mpt_config


@pytest.fixture(scope="module")
def pairs(shared) -> list[tuple[list[int], list[int]]]:
    """The authors' 20 instruction pairs as real token ids."""
    return authors_token_pairs(shared)


class Packed:
    """Every pair that fits ``seq_len``, packed in one go."""

    def __init__(self, pairs, seq_len: int):
        examples = InstructionExamples(pairs, seq_len, eos_id=0)
        self.input_ids, self.labels, self.seq_ids = examples.rows(examples.bins(np.arange(len(examples))))
        self.stats = examples.stats()

    def __len__(self) -> int:
        return len(self.input_ids)


@pytest.fixture(scope="module")
def packed(pairs):
    """The 12 pairs that fit 1024 tokens, packed into 7 rows; 4 rows hold two or three examples."""
    out = Packed(pairs, 1024)
    assert (out.stats.packed, out.stats.rows) == (12, 7)
    return out


def packed_logits(model, ids, seq):
    return model(ids, seq)


@pytest.fixture(scope="module")
def hf_model():
    # 6 heads: not a power of two, so MPT's interleaved slope order is exercised too.
    return build_model(mpt_config("tiny", n_heads=6, d_model=96, n_layers=3, max_seq_len=2048), seed=5).eval()


@pytest.fixture(scope="module", params=["eager", "sdpa", "flex"])
def model(request, hf_model):
    return PackedMpt(hf_model, request.param).eval()


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


def test_each_packed_example_matches_its_logits_alone(model, packed):
    shared_rows = [r for r in range(len(packed)) if packed.seq_ids[r].max() >= 1]
    assert len(shared_rows) == 4
    assert _worst_gap(model, packed, shared_rows) < 1e-5


def test_relative_paths_match_alone_on_a_full_2048_token_row(model, pairs):
    """Hugging Face's eager bias is key-only, up to slope * 2047 in magnitude, and its float32 rounding
    reaches ~1.5e-5 at this length; the relative bias of the SDPA and flex paths stays well below 1e-5."""
    if model.attention == "eager":
        pytest.skip("the eager path's key-only bias rounds differently at 2048 tokens (see the docstring)")
    packed = Packed(pairs, 2048)
    fullest = int(packed.seq_ids.max(axis=1).argmax())
    assert packed.seq_ids[fullest].max() == 3  # four examples in one row
    assert _worst_gap(model, packed, [fullest]) < 1e-5


def test_flex_and_sdpa_agree_with_eager(hf_model, packed):
    """Every position of the rows shared by several examples: the three paths compute the same logits in float32."""
    shared_rows = packed.seq_ids.max(axis=1) >= 1
    ids = torch.from_numpy(packed.input_ids[shared_rows]).long()
    seq = torch.from_numpy(packed.seq_ids[shared_rows]).long()
    with torch.no_grad():
        logits = {impl: PackedMpt(hf_model, impl)(ids, seq) for impl in ("eager", "sdpa", "flex")}
    real = seq >= 0
    for impl in ("sdpa", "flex"):
        assert (logits[impl] - logits["eager"])[real].abs().max().item() < 1e-5


def test_without_the_block_mask_examples_contaminate_each_other(model, packed):
    """The control: one sequence id for the whole row lets later examples see earlier ones."""
    r = int((packed.seq_ids.max(axis=1) >= 1).argmax())  # a row holding two examples or more
    ids = torch.from_numpy(packed.input_ids[r : r + 1]).long()
    seq = torch.from_numpy(packed.seq_ids[r : r + 1]).long()
    second = (seq[0] == 1).nonzero().flatten()
    with torch.no_grad():
        leaky = packed_logits(model, ids, torch.zeros_like(seq))[0, second]
        alone = packed_logits(model, ids[:, second], torch.zeros_like(ids[:, second]))[0]
    assert (leaky - alone).abs().max().item() > 1e-3


def test_hf_forward_without_mask_equals_single_example_path(hf_model, packed):
    ids = torch.from_numpy(packed.input_ids[:1, :100]).long()
    with torch.no_grad():
        ours = PackedMpt(hf_model, "eager")(ids, torch.zeros_like(ids))
        plain = hf_model(input_ids=ids).logits
    assert torch.equal(plain, ours)


@pytest.mark.parametrize("n_heads", [4, 6, 32])
def test_alibi_slopes_follow_mpt_layout(n_heads):
    hf = build_mpt_alibi_tensor(n_heads, 2)  # (heads, 1, 2): [-slope, 0]
    assert torch.allclose(-hf[:, 0, 0], alibi_slopes(n_heads))


def test_activation_checkpointing_and_the_chunked_loss_keep_the_gradients(packed):
    """Per-block recomputation and a loss computed 100 tokens of logits at a time give the gradients of
    one plain cross-entropy over the whole micro-batch's logits."""
    ids = torch.from_numpy(packed.input_ids[:2]).long()
    seq = torch.from_numpy(packed.seq_ids[:2]).long()
    labels = torch.from_numpy(packed.labels[:2]).long()
    grads = []
    for checkpointing, chunk in ((False, None), (True, 100)):
        net = PackedMpt(
            build_model(mpt_config("tiny", n_layers=2, max_seq_len=1024), seed=7),
            "sdpa",
            checkpointing=checkpointing,
            loss_chunk=chunk or 1,
        ).train()
        if chunk is None:
            logits = net(ids, seq).float()
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum")
        else:
            loss = net(ids, seq, labels)
        loss.backward()
        grads.append((loss.item(), net.model.transformer.blocks[0].attn.Wqkv.weight.grad))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-7)
