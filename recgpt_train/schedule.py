"""Learning-rate schedule: linear warmup, then cosine decay to a fraction of the peak (RecGPT: 0.1x)."""

from __future__ import annotations

import math

import torch


def cosine_with_warmup(step: int, warmup_steps: int, total_steps: int, final_ratio: float = 0.1) -> float:
    """The lr multiplier at ``step``: step/warmup during warmup, then cosine from 1 to ``final_ratio``."""
    if warmup_steps and step < warmup_steps:
        return step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, final_ratio: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` over :func:`cosine_with_warmup`; its state dict resumes exactly."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_with_warmup(step, warmup_steps, total_steps, final_ratio)
    )
