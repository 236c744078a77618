"""What a model costs: FLOPs (attention included), training memory, and interleaved speed figures.

Nothing here depends on the weights, so every figure is measured on freshly built models.

- FLOPs are counted by torch's ``FlopCounterMode`` (2 per multiply-add of every matrix product and
  convolution; norms, softmax and activations are not counted). On CPU, torch's counter has no
  formula for the fused attention kernel (``_scaled_dot_product_flash_attention_for_cpu``) and
  silently counts it as zero; :func:`flops_per_image` supplies its formula, so the QK^T and AV
  products are counted on both attention paths. :func:`vit_flops` is the same count by hand.
- Memory, two ways. ``activation_bytes``: the tensors autograd saves for the backward pass of one
  training batch (each storage once, parameters left out); it shows what each attention path keeps,
  e.g. that torch's fused CPU attention keeps O(N) per head, not the (N, N) map. ``step_peak_bytes``:
  the resident memory one whole training step (forward, backward, AdamW) adds at its peak, measured
  in a fresh process from the kernel's high-water mark, so it includes every temporary.
- Speeds come from interleaved rounds: every model is timed once per round, the order reversed
  every other round, so that drift in this machine's speed hits all models alike; each figure is
  the median over rounds with its spread (min and max).
- The suites' extra measurements (``training/suites.py`` names who takes which):
  :func:`attention_cost`, attention alone, fused against explicit softmax, at growing token
  counts; :func:`pretrained_route_cost`, timm's ImageNet-sized ViT against the shipped
  architecture.
"""

from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ViTConfig
from model.factory import build_model, count_parameters
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
    """Forward FLOPs of one image through our ViT (or timm's at the same config), by hand: what
    :func:`flops_per_image` must count. Per block, with N tokens of width C, d = C / heads:
    projections 8NC^2 and the MLP 4NC x hidden, plus the attention products: 4N^2C for full
    attention, 4Nw^2C for w x w windows (local or dilated), 4NCd + 2NC for linear attention, and for pooled keys
    (M = N / p^2 of them) 4NMC, with the key and value projections on the M tokens only. The mean
    of two heads (with a distillation token) is left out, as the softmax's and the norms' are."""
    c = config
    n = c.num_patches + c.num_prefix_tokens
    hidden = int(c.dim * c.mlp_ratio)
    projections = 2 * n * c.dim * 3 * c.dim + 2 * n * c.dim * c.dim  # qkv, output projection
    if c.attention == "full":
        attention = 4 * n * n * c.dim  # QK^T and AV over all heads
    elif c.attention in ("window", "grid"):
        attention = 4 * n * c.window**2 * c.dim
    elif c.attention == "linear":
        attention = 4 * n * c.dim * (c.dim // c.heads) + 2 * n * c.dim
    else:  # kvpool
        m = n // c.kv_pool**2
        projections = 2 * n * c.dim * c.dim + 2 * m * c.dim * 2 * c.dim + 2 * n * c.dim * c.dim
        attention = 4 * n * m * c.dim
    mlp = 2 * n * c.dim * hidden * 2
    head = 2 * c.dim * c.num_classes * (1 + c.distill_token)  # the distillation token's head too
    return _stem_flops(c) + c.depth * (projections + attention + mlp) + head


def _stem_flops(c: ViTConfig) -> int:
    """The patch embedding: one strided conv, or the conv stem's 3x3 convs and 1x1 projection."""
    if c.stem == "linear":
        return 2 * c.num_patches * c.in_chans * c.patch_size**2 * c.dim
    halvings = c.patch_size.bit_length() - 1
    width = max(c.dim // 2**halvings, 8)
    side = c.image_size
    total = 2 * side * side * 9 * c.in_chans * width
    for _ in range(halvings):
        wider = min(width * 2, c.dim)
        side //= 2
        total += 2 * side * side * 9 * width * wider
        width = wider
    return total + 2 * side * side * width * c.dim


def activation_bytes(model: nn.Module, batch: int = 128) -> int:
    """Bytes of the tensors autograd saves for the backward pass of one training batch: every
    storage counted once (a view saved twice is one tensor), the parameters left out."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    chans, size = input_shape(model)
    model.train()
    x = torch.randn(batch, chans, size, size, device=next(model.parameters()).device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x).sum()
    model.eval()
    del out
    return sum(storages.values())


def step_peak_bytes(config: ViTConfig, batch: int = 64, threads: int = 0) -> int:
    """Peak resident memory one training step (forward, backward, AdamW) adds, in a fresh process.

    The child builds the model, its optimiser and one batch, resets the kernel's high-water mark
    (``/proc/self/clear_refs``), runs one step and reports the new high-water mark minus the
    resident memory before the step. Linux only.
    """
    args = [json.dumps(config.to_dict()), str(batch), str(threads or torch.get_num_threads())]
    out = subprocess.run(
        [sys.executable, "-m", "training.costs", *args], capture_output=True, text=True, check=True, timeout=900
    )
    return int(out.stdout.split()[-1])


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _measure_step_peak(config: ViTConfig, batch: int) -> int:
    from model.factory import build_model

    model = build_model(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    chans, size = input_shape(model)
    x, y = torch.randn(batch, chans, size, size), torch.randint(0, 10, (batch,))
    before = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return (_status_kb("VmHWM") - before) * 1024


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


if __name__ == "__main__":  # the child process of step_peak_bytes: CONFIG_JSON BATCH THREADS
    torch.set_num_threads(int(sys.argv[3]))
    print(_measure_step_peak(ViTConfig.from_dict(json.loads(sys.argv[1])), int(sys.argv[2])))


# --- the suites' extra measurements ----------------------------------------------------------------


def attention_cost(
    tokens: tuple[int, ...] = (16, 49, 100, 196, 400, 784, 1024),
    dim: int = 64,
    heads: int = 4,
    batch: int = 8,
    rounds: int = 5,
    repeats: int = 5,
) -> list[dict[str, Any]]:
    """Milliseconds per attention forward at growing token counts, fused SDPA against the explicit
    softmax, from interleaved rounds (median, min, max)."""
    rows = []
    d = dim // heads
    for n in tokens:
        q, k, v = (torch.randn(batch, heads, n, d) for _ in range(3))
        samples: dict[str, list[float]] = {"fused": [], "explicit": []}
        with torch.inference_mode():
            for r in range(rounds + 1):
                for name in ("fused", "explicit") if r % 2 == 0 else ("explicit", "fused"):
                    fn = _fused if name == "fused" else _explicit
                    start = time.perf_counter()
                    for _ in range(repeats):
                        fn(q, k, v)
                    if r:
                        samples[name].append((time.perf_counter() - start) / repeats * 1000)
        rows.append({"tokens": n} | {f"{name}_ms": spread(times, 3) for name, times in samples.items()})
    return rows


def _fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.scaled_dot_product_attention(q, k, v)


def _explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ v


def pretrained_route_cost(rounds: int = 5) -> dict[str, Any]:
    """What the ImageNet-pretrained route costs: timm's ``vit_tiny_patch16_224`` (built with
    ``pretrained=False``: the same network without the download) at 224x224 RGB, against the
    shipped model's architecture at 28x28, in interleaved rounds (inference, batch 16, and one
    image)."""
    import timm

    from training.config import PRESETS

    tiny = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
    ours = build_model(PRESETS["shipped"]["model"])
    models = {"vit_tiny": tiny, "shipped": ours}
    speeds = interleaved_speeds(models, rounds=rounds, train_steps=1, train_batch=16, infer_batch=16)
    return {
        name: {
            "parameters": count_parameters(m),
            "input": f"{input_shape(m)[0]}x{input_shape(m)[1]}x{input_shape(m)[1]}",
            "mflops_per_image": round(flops_per_image(m) / 1e6, 2),
        }
        | speeds[name]
        for name, m in models.items()
    }
