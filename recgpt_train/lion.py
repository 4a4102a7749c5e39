"""Decoupled Lion (Chen et al. 2023) with llm-foundry ``DecoupledLionW`` semantics, as multi-tensor
(``torch._foreach_*``) updates: a handful of kernels a step instead of several per parameter.

Per step, for each parameter ``p`` with gradient ``g`` and momentum ``m``:
``p *= 1 - wd * lr / initial_lr`` (decay follows the schedule, not the raw lr),
``p -= lr * sign(beta1 * m + (1 - beta1) * g)``, then ``m = beta2 * m + (1 - beta2) * g``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


class DecoupledLionW(torch.optim.Optimizer):
    """Lion with weight decay decoupled from the learning rate and scaled by lr / initial lr."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})
        for group in self.param_groups:
            group.setdefault("initial_lr", group["lr"])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One Lion update of every parameter that has a gradient, all of a group's tensors at once."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if not self.state[p]:
                    self.state[p]["exp_avg"] = torch.zeros_like(p)
            grads = [p.grad for p in params]
            exp_avgs = [self.state[p]["exp_avg"] for p in params]
            if wd:
                torch._foreach_mul_(params, 1.0 - wd * lr / group["initial_lr"])
            updates = torch._foreach_lerp(exp_avgs, grads, 1 - beta1)
            torch._foreach_sign_(updates)
            torch._foreach_add_(params, updates, alpha=-lr)
            torch._foreach_lerp_(exp_avgs, grads, 1 - beta2)
        return loss
