"""Attention for packed rows: each example attends only to its own earlier tokens, exact under ALiBi.

``MptForCausalLM`` ignores ``position_ids``, but its ALiBi bias is relative (softmax is invariant to the
per-query shift in HF's key-only bias), so masking every key outside the query's own example makes each
example in a packed row see exactly what it would see alone. Three paths, chosen by name:

- ``eager``: Hugging Face's own attention, handed the boolean block mask and its own ALiBi tensor;
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` with the relative ALiBi bias
  ``slope_h * (j - i)`` and the block mask folded into one dense additive bias;
- ``flex``: ``torch.nn.attention.flex_attention`` with ALiBi as a ``score_mod`` and the per-example
  causal mask as a block-sparse ``BlockMask`` (fully masked tiles are skipped); fused when compiled.

:func:`attention_input` builds what every layer receives, once per forward pass.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

Impl = Literal["eager", "sdpa", "flex"]
IMPLS: tuple[str, ...] = ("eager", "sdpa", "flex")


def allowed_mask(seq_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) sequence ids -> (B, 1, L, L) bool, True where query i may attend key j (same id, j <= i)."""
    length = seq_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=seq_ids.device).tril()
    same = seq_ids[:, :, None] == seq_ids[:, None, :]
    return (same & causal)[:, None]


def alibi_slopes(n_heads: int, alibi_bias_max: int = 8, device: torch.device | None = None) -> torch.Tensor:
    """Per-head ALiBi slopes, in MPT's order (as ``build_mpt_alibi_tensor`` lays them out)."""
    n_pow2 = 2 ** math.ceil(math.log2(n_heads))
    base = torch.arange(1, n_pow2 + 1, dtype=torch.float32, device=device) * (alibi_bias_max / n_pow2)
    slopes = 1.0 / torch.pow(2, base)
    if n_pow2 != n_heads:
        slopes = torch.cat([slopes[1::2], slopes[::2]])[:n_heads]
    return slopes


def dense_bias(seq_ids: torch.Tensor, slopes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, H, L, L) additive bias: ``slope_h * (j - i)`` where allowed, -inf elsewhere."""
    pos = torch.arange(seq_ids.shape[1], device=seq_ids.device)
    rel = (pos[None, :] - pos[:, None]).to(torch.float32)
    bias = (slopes.to(seq_ids.device)[:, None, None] * rel)[None]
    return bias.masked_fill(~allowed_mask(seq_ids), float("-inf")).to(dtype)


def block_mask(seq_ids: torch.Tensor) -> object:
    """The per-example causal mask of ``seq_ids`` as a flex-attention ``BlockMask``."""
    from torch.nn.attention.flex_attention import create_block_mask

    def same_example_causal(b, h, q_idx, kv_idx):
        return (seq_ids[b, q_idx] == seq_ids[b, kv_idx]) & (kv_idx <= q_idx)

    batch, length = seq_ids.shape
    return create_block_mask(same_example_causal, batch, None, length, length, device=seq_ids.device)


def attention_input(impl: str, seq_ids: torch.Tensor, config: object, dtype: torch.dtype) -> tuple[object, object]:
    """(position_bias, attention_mask) that every MPT block of ``impl`` receives for rows ``seq_ids``."""
    if impl == "flex":
        return None, block_mask(seq_ids)
    if impl == "sdpa":
        return None, dense_bias(seq_ids, alibi_slopes(config.n_heads, config.attn_config.alibi_bias_max), dtype)
    from transformers.models.mpt.modeling_mpt import build_mpt_alibi_tensor

    alibi = build_mpt_alibi_tensor(config.n_heads, config.max_seq_len, config.attn_config.alibi_bias_max, seq_ids.device)
    return alibi, ~allowed_mask(seq_ids)


def _qkv(self: nn.Module, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch, length = hidden_states.shape[:2]
    qkv = self.Wqkv(hidden_states)
    if self.clip_qkv:
        qkv = qkv.clamp(min=-self.clip_qkv, max=self.clip_qkv)
    return tuple(t.reshape(batch, length, self.n_heads, self.head_dim).transpose(1, 2) for t in qkv.chunk(3, dim=2))


def _packed_forward(
    self: nn.Module,
    impl: str,
    hidden_states: torch.Tensor,
    position_bias: torch.Tensor | None = None,
    attention_mask: object = None,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """MptAttention's computation through SDPA (a dense bias) or flex attention (a ``BlockMask``)."""
    if kwargs.get("cache") is not None or attention_mask is None:
        raise ValueError(f"the {impl} packed-attention path is for training: it needs attention_input, no KV cache")
    batch, length = hidden_states.shape[:2]
    q, k, v = _qkv(self, hidden_states)
    if impl == "flex":
        from torch.nn.attention.flex_attention import flex_attention

        slopes = self.alibi_slopes

        def alibi(score, b, h, q_idx, kv_idx):
            return score + slopes[h] * (kv_idx - q_idx)

        out = flex_attention(q, k, v, score_mod=alibi, block_mask=attention_mask, scale=self.softmax_scale)
    else:
        dropout = self.attn_dropout_p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=dropout, scale=self.softmax_scale)
    return self.out_proj(out.transpose(1, 2).reshape(batch, length, -1)), None


def set_attention(model: nn.Module, impl: str) -> None:
    """Route every MPT attention layer of ``model`` through ``impl`` (weights and state-dict keys untouched)."""
    if impl not in IMPLS:
        raise ValueError(f"unknown attention path {impl!r} ({' | '.join(IMPLS)})")
    config = model.config
    slopes = alibi_slopes(config.n_heads, config.attn_config.alibi_bias_max)
    for module in model.modules():
        if type(module).__name__ != "MptAttention":
            continue
        if impl == "eager":
            module.__dict__.pop("forward", None)
            continue
        if impl == "flex" and "alibi_slopes" not in module._buffers:
            module.register_buffer("alibi_slopes", slopes.to(next(module.parameters()).device), persistent=False)
        module.forward = functools.partial(_packed_forward, module, impl)
