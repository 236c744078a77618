"""Batched inference functions the batchers run: probabilities, and attention maps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from model.checkpoint import LoadedCheckpoint
from model.factory import forward_with_attention, match_channels
from model.rollout import attention_rollout, cls_attention


@dataclass(frozen=True)
class Prediction:
    probabilities: list[float]


@dataclass(frozen=True)
class AttentionResult:
    probabilities: list[float]
    rollout: torch.Tensor  # (g, g), sums to 1
    cls_attention: torch.Tensor  # (g, g), last layer, head mean
    layers: torch.Tensor  # (layers, heads, g, g): each layer's and head's class-token attention


def predict_fn(
    ckpt: LoadedCheckpoint, device: torch.device, dtype: torch.dtype
) -> Callable[[torch.Tensor], list[Prediction]]:
    model, in_chans = ckpt.model, ckpt.meta.config.in_chans

    @torch.inference_mode()
    def run(x: torch.Tensor) -> list[Prediction]:
        logits = model(match_channels(x.to(device, dtype), in_chans))
        probs = logits.float().softmax(dim=-1).cpu()
        return [Prediction(row) for row in probs.tolist()]

    return run


def attention_fn(
    ckpt: LoadedCheckpoint, device: torch.device, dtype: torch.dtype
) -> Callable[[torch.Tensor], list[AttentionResult]]:
    model, config = ckpt.model, ckpt.meta.config
    prefix = config.num_prefix_tokens

    @torch.inference_mode()
    def run(x: torch.Tensor) -> list[AttentionResult]:
        logits, attn = forward_with_attention(model, match_channels(x.to(device, dtype), config.in_chans))
        attn = attn.float()
        probs = logits.float().softmax(dim=-1).cpu()
        rollout = attention_rollout(attn, prefix).cpu()
        layers = torch.stack([cls_attention(attn, layer, prefix) for layer in range(attn.shape[1])], dim=1).cpu()
        return [
            AttentionResult(probs[i].tolist(), rollout[i], layers[i, -1].mean(0), layers[i]) for i in range(x.shape[0])
        ]

    return run
