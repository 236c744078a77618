"""One entry point that builds any model the project knows from its config."""

from __future__ import annotations

import torch
from torch import nn

from model.config import ViTConfig
from model.vit import ViT


def build_model(config: ViTConfig, pretrained: bool = False) -> nn.Module:
    """Our ViT (``impl='ours'``) or timm's VisionTransformer (``impl='timm'``) for ``config``."""
    if config.impl == "timm":
        from model.timm_vit import build_timm_vit

        return build_timm_vit(config, pretrained=pretrained)
    if pretrained:
        raise ValueError("pretrained weights exist only for impl='timm'; our ViT trains from scratch")
    return ViT(config)


def forward_with_attention(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and attention (B, layers, heads, N, N) from either implementation."""
    if isinstance(model, ViT):
        return model.forward_with_attention(x)
    from model.timm_vit import timm_forward_with_attention

    return timm_forward_with_attention(model, x)


class WithAttention(nn.Module):
    """A model's attention path as a module of its own (for tracing and export): the forward pass
    returns the logits and the attention maps, as :func:`forward_with_attention`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)  # a new module is in training mode; exporting restores that mode

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return forward_with_attention(self.model, x)


def match_channels(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Grayscale batch (B, 1, H, W) -> (B, in_chans, H, W), replicating the digit to RGB if 3."""
    if x.shape[1] == in_chans:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, in_chans, -1, -1)
    raise ValueError(f"cannot turn {x.shape[1]}-channel input into {in_chans} channels")


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
