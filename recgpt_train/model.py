"""MPT models: architecture presets, random init offline, or base weights from a path or Hub id."""

from __future__ import annotations

import torch
from transformers import MptConfig, MptForCausalLM

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


def build_model(config: MptConfig, pretrained: str | None = None, seed: int = 0) -> MptForCausalLM:
    """Base weights from ``pretrained`` (local path or Hub id), else a seeded random init."""
    if pretrained:
        return MptForCausalLM.from_pretrained(pretrained, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MptForCausalLM(config)


def count_params(model: torch.nn.Module) -> int:
    """Parameters counted once (the tied embedding and LM head are one tensor)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def enable_activation_checkpointing(model: MptForCausalLM) -> None:
    """Recompute each block's activations in the backward pass (non-reentrant), on any transformers version."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
