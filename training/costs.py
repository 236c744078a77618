"""What a model costs: FLOPs (attention included), training memory, and interleaved speed figures.

Nothing here depends on the weights, so every figure is measured on freshly built models.

- FLOPs are counted by torch's ``FlopCounterMode`` (2 per multiply-add of every matrix product and
  convolution; norms, softmax and activations are not counted). On CPU, torch's counter has no
  formula for the fused attention kernel (``_scaled_dot_product_flash_attention_for_cpu``) and
  silently counts it as zero; :func:`flops_per_image` supplies its formula, so the QK^T and AV
  products are counted on both attention paths. :func:`vit_flops` is the same count by hand.
- Memory is the bytes autograd keeps for the backward pass of one training batch (the peak a
  training step adds on top of the weights and optimiser state).
- Speeds come from interleaved rounds: every model is timed once per round, the order reversed
  every other round, so that drift in this machine's speed hits all models alike; each figure is
  the median over rounds with its spread (min and max).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ViTConfig
from training.engine import input_shape

_SDPA_CPU = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def _sdpa_flops(query: Sequence[int], key: Sequence[int], value: Sequence[int], *args: Any, **kwargs: Any) -> int:
    """QK^T and AV of one fused attention call, from the shapes (B, heads, N, d)."""
    *batch, n_q, d = query
    n_k, d_v = key[-2], value[-1]
    b = 1
    for size in batch:
        b *= size
    return 2 * b * n_q * n_k * d + 2 * b * n_q * n_k * d_v


def flops_per_image(model: nn.Module, forward: Callable[[torch.Tensor], Any] | None = None) -> int:
    """Forward FLOPs for one image, attention products included, on the fused or a given path."""
    from torch.utils.flop_counter import FlopCounterMode

    chans, size = input_shape(model)
    x = torch.zeros(1, chans, size, size, device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False, custom_mapping={_SDPA_CPU: _sdpa_flops})
    model.eval()
    with counter, torch.no_grad():
        (forward or model)(x)
    return int(counter.get_total_flops())


def vit_flops(config: ViTConfig) -> int:
    """Forward FLOPs of one image through our ViT with the linear patch embedding and full
    attention, by hand: what :func:`flops_per_image` must count."""
    c = config
    n = c.num_patches + c.num_prefix_tokens
    hidden = int(c.dim * c.mlp_ratio)
    stem = 2 * c.num_patches * c.in_chans * c.patch_size**2 * c.dim
    projections = 2 * n * c.dim * 3 * c.dim + 2 * n * c.dim * c.dim  # qkv, output projection
    attention = 2 * n * n * c.dim + 2 * n * n * c.dim  # QK^T and AV over all heads
    mlp = 2 * n * c.dim * hidden * 2
    head = 2 * c.dim * c.num_classes
    return stem + c.depth * (projections + attention + mlp) + head


def activation_bytes(model: nn.Module, batch: int = 128) -> int:
    """Bytes of tensors autograd keeps for the backward pass of one training batch."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    chans, size = input_shape(model)
    model.train()
    x = torch.randn(batch, chans, size, size, device=next(model.parameters()).device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    model.eval()
    return total


def spread(samples: Sequence[float], digits: int = 1) -> dict[str, Any]:
    """Median, min and max of repeated measurements."""
    return {
        "median": round(statistics.median(samples), digits),
        "min": round(min(samples), digits),
        "max": round(max(samples), digits),
        "n": len(samples),
    }


class _Timed:
    """One model's timers: training steps, single-image latency, batch throughput."""

    def __init__(self, model: nn.Module, train_batch: int, infer_batch: int):
        chans, size = input_shape(model)
        device = next(model.parameters()).device
        self.model = model.eval()
        self.trainee = copy.deepcopy(model).train()
        self.optimizer = torch.optim.AdamW(self.trainee.parameters(), lr=1e-4)
        self.x = torch.randn(train_batch, chans, size, size, device=device)
        self.y = torch.randint(0, 10, (train_batch,), device=device)
        self.one = torch.randn(1, chans, size, size, device=device)
        self.many = torch.randn(infer_batch, chans, size, size, device=device)

    def train_images_per_s(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            loss = F.cross_entropy(self.trainee(self.x), self.y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        _sync(self.x.device)
        return steps * len(self.x) / (time.perf_counter() - start)

    @torch.inference_mode()
    def latency_ms(self, repeats: int) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.model(self.one)
            _sync(self.one.device)
            times.append(time.perf_counter() - start)
        return 1000 * statistics.median(times)

    @torch.inference_mode()
    def infer_images_per_s(self) -> float:
        start = time.perf_counter()
        self.model(self.many)
        _sync(self.many.device)
        return len(self.many) / (time.perf_counter() - start)


def interleaved_speeds(
    models: dict[str, nn.Module],
    rounds: int = 5,
    train_steps: int = 4,
    train_batch: int = 64,
    infer_batch: int = 256,
    latency_repeats: int = 15,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Training images/s, latency (ms) and inference images/s of every model, from ``rounds``
    interleaved rounds (order reversed every other round, one untimed warm-up round first)."""
    timed = {name: _Timed(m, train_batch, infer_batch) for name, m in models.items()}
    samples: dict[str, dict[str, list[float]]] = {n: {"train": [], "latency": [], "infer": []} for n in models}
    names = list(models)
    for r in range(rounds + 1):
        for name in names if r % 2 == 0 else names[::-1]:
            t = timed[name]
            figures = (t.train_images_per_s(train_steps), t.latency_ms(latency_repeats), t.infer_images_per_s())
            if r:  # round 0 warms up allocators and kernel choices
                for key, value in zip(("train", "latency", "infer"), figures, strict=True):
                    samples[name][key].append(value)
    return {
        name: {
            "train_images_per_s": spread(s["train"]),
            "latency_ms": spread(s["latency"], 3),
            "images_per_s": spread(s["infer"]),
        }
        for name, s in samples.items()
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
