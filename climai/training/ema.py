"""Exponential moving average of model weights (validated and shipped instead of the raw ones)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``shadow = d * shadow + (1 - d) * weights`` after every step, ``d = min(decay, (1+n)/(10+n))``.

    The warm-up of ``d`` lets short runs (the toy campaign) use the EMA from the first epoch.
    ``decay = 0`` makes the shadow a copy of the weights.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_p = list(self.shadow.parameters())
        model_p = [p.detach() for p in model.parameters()]
        if d == 0:
            torch._foreach_copy_(ema_p, model_p)
        else:
            torch._foreach_lerp_(ema_p, model_p, 1.0 - d)
        for b_ema, b in zip(self.shadow.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)

    def state_dict(self) -> dict[str, object]:
        return {"shadow": self.shadow.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.shadow.load_state_dict(state["shadow"])  # type: ignore[arg-type]
        self.updates = int(state["updates"])  # type: ignore[arg-type]
