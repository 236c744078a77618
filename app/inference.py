"""Batched inference functions the batchers run: probabilities, and attention maps.

The service runs the model as a frozen TorchScript trace. Eager PyTorch re-enters Python (and so
takes the GIL) for every module of the forward pass, about 150 times per batch; while the event
loop is busy, each of those waits for the GIL's switch interval, and a batch that takes 26 ms
alone took 530 ms next to a busy Python thread (measured here). The trace runs the whole graph in
C++ with the GIL released. It is checked against the eager model when loaded.

TorchScript is deprecated in favour of ``torch.compile``/``torch.export``; on a CPU server those
need a C++ toolchain at run time or an ahead-of-time build step, so the trace is still the
practical choice here. ``VIT_DIGITS_JIT=false`` serves the eager model.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from model.checkpoint import LoadedCheckpoint
from model.factory import forward_with_attention, match_channels
from model.rollout import attention_rollout, cls_attention

log = logging.getLogger(__name__)
Runner = Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class Prediction:
    probabilities: list[float]


@dataclass(frozen=True)
class AttentionResult:
    probabilities: list[float]
    rollout: torch.Tensor  # (g, g), sums to 1
    cls_attention: torch.Tensor  # (g, g), last layer, head mean
    layers: torch.Tensor  # (layers, heads, g, g): each layer's and head's class-token attention


class WithAttention(nn.Module):
    """The model's attention path as a module of its own, so that it can be traced."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return forward_with_attention(self.model, x)


@torch.inference_mode()
def compile_runner(module: nn.Module, example: torch.Tensor, jit: bool) -> Runner:
    """A frozen TorchScript trace of ``module`` if ``jit`` and it reproduces the eager outputs,
    else the eager module itself."""
    module.eval()
    if not jit:
        return module
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python values
            traced = torch.jit.freeze(torch.jit.trace(module, example, check_trace=False))
        for batch in (example, torch.cat([example, example[:1]])):  # another batch size too
            _assert_close(module(batch), traced(batch))
    except Exception as exc:  # any tracing problem: serve eagerly rather than not at all
        log.warning("TorchScript trace failed, serving the eager model", extra={"error": str(exc)})
        return module
    return traced


def _assert_close(eager: object, traced: object) -> None:
    expected = eager if isinstance(eager, tuple) else (eager,)
    actual = traced if isinstance(traced, tuple) else (traced,)
    torch.testing.assert_close(actual, expected, rtol=1e-3, atol=1e-4)


def predict_fn(
    runner: Runner, ckpt: LoadedCheckpoint, device: torch.device, dtype: torch.dtype
) -> Callable[[torch.Tensor], list[Prediction]]:
    in_chans = ckpt.meta.config.in_chans

    @torch.inference_mode()
    def run(x: torch.Tensor) -> list[Prediction]:
        logits = runner(match_channels(x.to(device, dtype), in_chans))
        assert isinstance(logits, torch.Tensor)
        probs = logits.float().softmax(dim=-1).cpu()
        return [Prediction(row) for row in probs.tolist()]

    return run


def attention_fn(
    runner: Runner, ckpt: LoadedCheckpoint, device: torch.device, dtype: torch.dtype
) -> Callable[[torch.Tensor], list[AttentionResult]]:
    config = ckpt.meta.config
    prefix = config.num_prefix_tokens

    @torch.inference_mode()
    def run(x: torch.Tensor) -> list[AttentionResult]:
        logits, attn = runner(match_channels(x.to(device, dtype), config.in_chans))
        attn = attn.float()
        probs = logits.float().softmax(dim=-1).cpu()
        rollout = attention_rollout(attn, prefix).cpu()
        layers = torch.stack([cls_attention(attn, layer, prefix) for layer in range(attn.shape[1])], dim=1).cpu()
        return [
            AttentionResult(probs[i].tolist(), rollout[i], layers[i, -1].mean(0), layers[i]) for i in range(x.shape[0])
        ]

    return run
