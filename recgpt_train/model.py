"""MPT models: architecture presets, random init offline, or base weights from a path or Hub id, and
:class:`PackedMpt`, the model as training runs it on packed rows."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint
from transformers import MptConfig, MptForCausalLM

from recgpt_train.attention import attention_input, set_attention
from recgpt_train.packing import IGNORE

PRESETS: dict[str, dict[str, int]] = {
    "mpt-7b": {"d_model": 4096, "n_heads": 32, "n_layers": 32, "vocab_size": 50432, "max_seq_len": 2048},
    "mpt-1b": {"d_model": 2048, "n_heads": 16, "n_layers": 24, "vocab_size": 50432, "max_seq_len": 2048},
    "tiny": {"d_model": 64, "n_heads": 4, "n_layers": 2, "vocab_size": 50432, "max_seq_len": 512},
}


def mpt_config(preset: str = "mpt-7b", **overrides: int | None) -> MptConfig:
    """An ALiBi MPT config (no biases, expansion 4, no dropout) from a preset plus explicit sizes."""
    sizes = dict(PRESETS.get(preset, {}))
    sizes.update({k: v for k, v in overrides.items() if v is not None})
    missing = {"d_model", "n_heads", "n_layers", "vocab_size", "max_seq_len"} - sizes.keys()
    if missing:
        raise ValueError(f"model preset {preset!r} needs {sorted(missing)}")
    return MptConfig(
        **sizes,
        expansion_ratio=4,
        no_bias=True,
        attn_config={"alibi": True, "attn_pdrop": 0, "alibi_bias_max": 8},
        resid_pdrop=0,
        emb_pdrop=0,
        use_cache=False,
    )


def build_model(config: MptConfig, pretrained: str | None = None, seed: int = 0,
                device: torch.device | None = None) -> MptForCausalLM:
    """Base weights from ``pretrained`` (local path or Hub id), else a seeded random init made directly
    on ``device`` (a 7B model initialises in seconds on a GPU, minutes on the CPU)."""
    if pretrained:
        return MptForCausalLM.from_pretrained(pretrained, dtype=torch.float32)
    device = torch.device(device or "cpu")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), device:
        torch.manual_seed(seed)
        return MptForCausalLM(config)


def count_params(model: torch.nn.Module) -> int:
    """Parameters counted once (the tied embedding and LM head are one tensor)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _chunk_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy((hidden @ weight.t()).float(), labels, reduction="sum")


def token_loss_sum(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
    """Summed cross-entropy of the positions that have a label, ``chunk`` tokens of logits at a time,
    each chunk recomputed in the backward pass: no float32 logits of the whole micro-batch ever exist."""
    keep = labels != IGNORE
    hidden, labels = hidden[keep], labels[keep]
    total = hidden.new_zeros((), dtype=torch.float32)
    for h, y in zip(hidden.split(chunk), labels.split(chunk), strict=True):
        total = total + checkpoint(_chunk_loss, h, weight, y, use_reentrant=False)
    return total


class PackedMpt(nn.Module):
    """An ``MptForCausalLM`` run on packed rows: one attention input per forward pass for every block,
    optional per-block activation checkpointing and ``torch.compile``, and a chunked loss. Its forward
    is the unit FSDP and DDP wrap; ``model`` keeps Hugging Face's module names for export."""

    def __init__(self, model: MptForCausalLM, attention: str, checkpointing: bool = False,
                 compile_blocks: bool = False, loss_chunk: int = 4096) -> None:
        super().__init__()
        self.model = model
        self.attention = attention
        self.checkpointing = checkpointing
        self.loss_chunk = loss_chunk
        set_attention(model, attention)
        if compile_blocks:
            for block in model.transformer.blocks:
                block.compile()

    def forward(self, input_ids: torch.Tensor, seq_ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The summed token loss over ``labels`` (shifted, -100 = none), or the logits where none are given."""
        mpt = self.model.transformer
        hidden = mpt.wte(input_ids)
        dtype = torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled(hidden.device.type) else hidden.dtype
        position_bias, mask = attention_input(self.attention, seq_ids, self.model.config, dtype)
        for block in mpt.blocks:
            if self.checkpointing and self.training:
                hidden = checkpoint(block, hidden, position_bias, mask, use_reentrant=False)[0]
            else:
                hidden = block(hidden, position_bias, mask)[0]
        hidden = mpt.norm_f(hidden)
        weight = self.model.get_output_embeddings().weight
        if labels is None:
            return hidden @ weight.t()
        return token_loss_sum(hidden.flatten(0, 1), weight, labels.flatten(), self.loss_chunk)
