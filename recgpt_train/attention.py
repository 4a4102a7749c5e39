"""Attention for packed rows: a block-diagonal causal mask per example, exact under ALiBi.

``MptForCausalLM`` ignores ``position_ids``, but its ALiBi bias is relative (softmax is invariant to the
per-query shift in HF's key-only bias), so masking every key outside the query's own example makes each
example in a packed row see exactly what it would see alone. Two paths share that mask:

- ``eager``: Hugging Face's own attention, handed a prepared 4D mask (returned as-is by its mask builder);
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` with the relative ALiBi bias
  ``slope_h * (j - i)`` and the block mask folded into one additive bias, built once per forward and
  shared by all layers.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

Impl = Literal["eager", "sdpa"]


def allowed_mask(seq_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) sequence ids -> (B, 1, L, L) bool, True where query i may attend key j (same id, j <= i)."""
    length = seq_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=seq_ids.device).tril()
    same = seq_ids[:, :, None] == seq_ids[:, None, :]
    return (same & causal)[:, None]


def packed_attention_mask(seq_ids: torch.Tensor) -> torch.Tensor:
    """The 4D additive mask handed to the model: 0 where attention is allowed, dtype-min elsewhere."""
    blocked = ~allowed_mask(seq_ids)
    return torch.zeros(blocked.shape, device=seq_ids.device).masked_fill(blocked, torch.finfo(torch.float32).min)


def alibi_slopes(n_heads: int, alibi_bias_max: int = 8, device: torch.device | None = None) -> torch.Tensor:
    """Per-head ALiBi slopes, in MPT's order (as ``build_mpt_alibi_tensor`` lays them out)."""
    n_pow2 = 2 ** math.ceil(math.log2(n_heads))
    base = torch.arange(1, n_pow2 + 1, dtype=torch.float32, device=device) * (alibi_bias_max / n_pow2)
    slopes = 1.0 / torch.pow(2, base)
    if n_pow2 != n_heads:
        slopes = torch.cat([slopes[1::2], slopes[::2]])[:n_heads]
    return slopes


class _BiasCache:
    """One additive bias per forward pass, keyed by the mask tensor every layer receives."""

    def __init__(self, slopes: torch.Tensor) -> None:
        self.slopes = slopes
        self.key: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None

    def get(self, blocked: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.key is not blocked or self.bias is None or self.bias.dtype != dtype:
            length = blocked.shape[-1]
            pos = torch.arange(length, device=blocked.device)
            rel = (pos[None, :] - pos[:, None]).to(torch.float32)
            slopes = self.slopes.to(blocked.device)
            bias = (slopes[:, None, None] * rel)[None].masked_fill(blocked, float("-inf"))
            self.key, self.bias = blocked, bias.to(dtype)
        return self.bias


def _sdpa_forward(
    self: nn.Module,
    bias_cache: _BiasCache,
    hidden_states: torch.Tensor,
    position_bias: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """MptAttention's computation through SDPA; ``attention_mask`` is HF's bool mask (True = blocked)."""
    if kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None:
        raise ValueError("the sdpa packed-attention path is for training; it takes no KV cache")
    batch, length = hidden_states.shape[:2]
    qkv = self.Wqkv(hidden_states)
    if self.clip_qkv:
        qkv = qkv.clamp(min=-self.clip_qkv, max=self.clip_qkv)
    q, k, v = (t.reshape(batch, length, self.n_heads, self.head_dim).transpose(1, 2) for t in qkv.chunk(3, dim=2))
    if attention_mask is None:
        attention_mask = ~torch.ones(length, length, dtype=torch.bool, device=q.device).tril()[None, None]
    bias = bias_cache.get(attention_mask, q.dtype)
    dropout = self.attn_dropout_p if self.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout, scale=self.softmax_scale)
    return self.out_proj(out.transpose(1, 2).reshape(batch, length, -1)), None


def set_attention(model: nn.Module, impl: Impl) -> None:
    """Route every MPT attention layer of ``model`` through ``impl`` (weights are untouched)."""
    if impl not in ("eager", "sdpa"):
        raise ValueError(f"unknown attention path {impl!r} (eager | sdpa)")
    config = model.config
    cache = _BiasCache(alibi_slopes(config.n_heads, config.attn_config.alibi_bias_max))
    for module in model.modules():
        if type(module).__name__ != "MptAttention":
            continue
        if impl == "eager":
            module.__dict__.pop("forward", None)
        else:
            module.forward = functools.partial(_sdpa_forward, module, cache)


def packed_logits(model: nn.Module, input_ids: torch.Tensor, seq_ids: torch.Tensor) -> torch.Tensor:
    """Logits of a batch of packed rows, each example attending only to its own earlier tokens."""
    return model(input_ids=input_ids, attention_mask=packed_attention_mask(seq_ids), use_cache=False).logits
