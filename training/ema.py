"""Exponential moving average of model weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """A shadow copy of the model whose weights track an EMA of the trained ones.

    The decay ramps up as ``min(decay, (1 + step) / (10 + step))`` so early averages are not
    dominated by the random initialisation. Buffers (BatchNorm statistics) are copied as they are.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.step = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.step += 1
        d = min(self.decay, (1 + self.step) / (10 + self.step))
        ema_params: list[torch.Tensor] = list(self.module.parameters())
        params: list[torch.Tensor] = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - d)
        for b_ema, b in zip(self.module.buffers(), model.buffers(), strict=False):
            b_ema.copy_(b)
