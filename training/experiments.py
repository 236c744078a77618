"""``python -m training experiments <suite>``: the coursework's questions, answered with numbers.

Each suite is a list of named variants, each a set of overrides of one base training config.
Every variant trains with the same budget (so the comparison within a suite is fair), then is
measured: test accuracy, parameters, FLOPs per image, training images/s, inference latency and
throughput, and the activation memory a training step keeps. Results go to
``<out>/<suite>/results.json``, ``results.csv`` and PNG plots; a finished variant is not run again
(resume by running the same command). ``--quick`` shrinks data and epochs to a few minutes.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model.checkpoint import load_checkpoint
from model.config import ViTConfig
from model.device import resolve_device
from model.factory import count_parameters, match_channels
from training.config import AugmentConfig, TrainConfig
from training.data import Split, load_split, prepare_root, to_input
from training.engine import accuracy

log = logging.getLogger(__name__)

SUITES: dict[str, dict[str, dict[str, Any]]] = {
    "tokens": {f"patch{p}": {"patch_size": p} for p in (2, 4, 7, 14)},
    "posenc": {name: {"pos_embed": name} for name in ("learned", "sincos2d", "none")},
    "pooling": {"cls-token": {"pool": "cls"}, "mean-pool": {"pool": "mean"}},
    "timm": {
        "ours-1ch": {},
        "timm-1ch": {"impl": "timm"},
        "ours-3ch": {"in_chans": 3},
        "timm-3ch": {"impl": "timm", "in_chans": 3},
    },
    "size": {
        "d64-l6-h4": {},
        "d32-l6-h4": {"dim": 32},
        "d128-l6-h4": {"dim": 128},
        "d64-l2-h4": {"depth": 2},
        "d64-l12-h4": {"depth": 12},
        "d64-l6-h1": {"heads": 1},
        "d64-l6-h8": {"heads": 8},
    },
    "stem": {"linear": {"stem": "linear"}, "conv": {"stem": "conv"}},
}
# The base every suite varies: the plain ViT of the coursework (linear patch embedding, so patch
# sizes 7 and 14 and timm's model are comparable), pinned here so that changing the CLI's default
# recipe never silently changes an experiment.
BASE = TrainConfig(
    model=ViTConfig(patch_size=4, dim=64, depth=6, heads=4, mlp_ratio=2.0, stem="linear", pos_embed="learned"),
    epochs=2,
    batch_size=64,
    lr=2e-3,
    warmup_epochs=0.2,
    label_smoothing=0.0,
    ema_decay=0.0,
    # No augmentation: the suites compare architectures at a short, fixed budget, and random affine
    # pays off only over long schedules; early on it slows every variant down (1 epoch on 20,000
    # images: 25.3% test with it, 37.9% without, for the linear-stem base).
    augment=AugmentConfig.off(),
)
QUICK = {"epochs": 1, "limit": 3000, "val_size": 300}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", choices=sorted(SUITES), help="which question to answer")
    p.add_argument("--quick", action="store_true", help="3,000 images, 1 epoch: minutes, not hours")
    p.add_argument("--epochs", type=int, help=f"epochs per variant (default {BASE.epochs}; quick {QUICK['epochs']})")
    p.add_argument("--limit", type=int, help="training images per variant (default: all)")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--out-dir", type=Path, default=Path("runs/experiments"))
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)


def run_experiments(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = args.out_dir / args.suite
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    done: dict[str, dict[str, Any]] = {}
    if results_file.exists():
        done = {r["variant"]: r for r in json.loads(results_file.read_text())["results"]}
    budget: dict[str, Any] = dict(QUICK) if args.quick else {}
    budget |= {k: v for k, v in (("epochs", args.epochs), ("limit", args.limit)) if v is not None}
    base = dataclasses.replace(
        BASE, data_dir=args.data_dir, device=args.device, seed=args.seed, run_dir=out / "runs", **budget
    )
    root = prepare_root(args.data_dir)
    test = load_split(root, train=False)
    if base.limit:
        test = test.subset(torch.arange(min(len(test), max(base.limit // 3, 200))))
    for variant, overrides in SUITES[args.suite].items():
        if variant in done and done[variant].get("budget") == budget:
            log.info("%s: already done, skipping", variant)
            continue
        cfg = dataclasses.replace(base, name=variant, model=base.model.replace(**overrides))
        done[variant] = run_variant(cfg, variant, overrides, test) | {"budget": budget}
        _write(out, args.suite, list(done.values()), budget)  # after every variant: resumable
    results = [done[v] for v in SUITES[args.suite] if v in done]
    if args.suite == "tokens":
        (out / "attention_cost.json").write_text(json.dumps(attention_cost(), indent=2))
    _write(out, args.suite, results, budget)
    _print_table(results)
    return results


def run_variant(cfg: TrainConfig, variant: str, overrides: dict[str, Any], test: Split) -> dict[str, Any]:
    """Train one variant from scratch, then measure it."""
    from training.train import run

    start = time.perf_counter()
    run(cfg)
    wall = time.perf_counter() - start
    device = resolve_device(cfg.device)
    model = load_checkpoint(cfg.run_path / "best.safetensors", device=device).model
    metrics = [json.loads(line) for line in (cfg.run_path / "metrics.jsonl").read_text().splitlines()]
    row: dict[str, Any] = {
        "variant": variant,
        "overrides": overrides,
        "tokens": cfg.model.num_patches + cfg.model.num_prefix_tokens,
        "parameters": count_parameters(model),
        "test_accuracy": round(accuracy(model, test, device), 5),
        "test_images": len(test),
        "train_images_per_s": train_speed(model, cfg.model.in_chans, cfg.batch_size),
        "epoch_images_per_s": round(sum(m["images_per_s"] for m in metrics) / len(metrics), 1),
        "train_wall_s": round(wall, 1),
        "mflops_per_image": round(flops_per_image(model, cfg.model.in_chans) / 1e6, 2),
        "activation_mb_per_128": round(activation_bytes(model, cfg.model.in_chans) / 2**20, 2),
    }
    row |= inference_speed(model, cfg.model.in_chans, device)
    if "pos_embed" in overrides:
        row["shuffled_patch_accuracy"] = round(shuffled_accuracy(model, test, device, cfg.model.patch_size), 5)
    log.info("%s: %s", variant, json.dumps(row))
    return row


def flops_per_image(model: nn.Module, in_chans: int) -> float:
    """Forward FLOPs for one 28x28 image, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, in_chans, 28, 28, device=_device(model)))
    return float(counter.get_total_flops())


def activation_bytes(model: nn.Module, in_chans: int, batch: int = 128) -> int:
    """Bytes of tensors autograd keeps for the backward pass of one training batch (peak memory)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    model.train()
    x = torch.randn(batch, in_chans, 28, 28, device=_device(model))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    model.eval()
    return total


def train_speed(model: nn.Module, in_chans: int, batch: int, steps: int = 15) -> float:
    """Training images/s: the median of ``steps`` timed AdamW steps on a copy of ``model``.

    A median of short steps, not the epoch average, so that anything else the machine does for a
    moment (another job, a pause) moves one sample instead of the figure.
    """
    trainee = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(trainee.parameters(), lr=1e-4)
    device = _device(trainee)
    x = torch.randn(batch, in_chans, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    times = []
    for step in range(steps + 3):
        start = time.perf_counter()
        loss = F.cross_entropy(trainee(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        if step >= 3:  # warm-up steps are not timed
            times.append(time.perf_counter() - start)
    return round(batch / statistics.median(times), 1)


def inference_speed(model: nn.Module, in_chans: int, device: torch.device) -> dict[str, float]:
    """Median single-image latency (ms) and batch-256 throughput (images/s, from the median batch)."""
    model.eval()
    one, many = torch.randn(1, in_chans, 28, 28, device=device), torch.randn(256, in_chans, 28, 28, device=device)

    def median_s(x: torch.Tensor, repeats: int) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            _sync(device)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    with torch.inference_mode():
        for _ in range(5):
            model(one)
        model(many)
        latency, batch = median_s(one, 50), median_s(many, 7)
    return {"latency_ms": round(latency * 1000, 3), "images_per_s": round(256 / batch, 1)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def shuffle_patches(x: torch.Tensor, patch: int, generator: torch.Generator) -> torch.Tensor:
    """Permute the patches of every image in ``x`` (B, C, H, W) by one random permutation."""
    B, C, H, W = x.shape
    g = H // patch
    tiles = x.reshape(B, C, g, patch, g, patch).permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, C, patch, patch)
    tiles = tiles[:, torch.randperm(g * g, generator=generator)]
    return tiles.reshape(B, g, g, C, patch, patch).permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)


@torch.no_grad()
def shuffled_accuracy(model: nn.Module, test: Split, device: torch.device, patch: int) -> float:
    """Accuracy when each test image's patches are shuffled: what position information is worth."""
    generator = torch.Generator().manual_seed(0)
    correct = 0
    in_chans = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    for start in range(0, len(test), 500):
        x = to_input(test.images[start : start + 500], device)
        x = shuffle_patches(x, patch, generator)
        correct += int((model(match_channels(x, in_chans)).argmax(1).cpu() == test.labels[start : start + 500]).sum())
    return correct / max(len(test), 1)


def attention_cost(
    tokens: tuple[int, ...] = (16, 49, 100, 196, 400, 784, 1024),
    dim: int = 64,
    heads: int = 4,
    batch: int = 8,
    repeats: int = 10,
) -> list[dict[str, float]]:
    """Milliseconds per attention forward at growing token counts: fused SDPA vs explicit softmax."""
    rows = []
    d = dim // heads
    for n in tokens:
        q, k, v = (torch.randn(batch, heads, n, d) for _ in range(3))
        rows.append(
            {
                "tokens": n,
                "fused_ms": _time_ms(_fused, q, k, v, repeats),
                "explicit_ms": _time_ms(_explicit, q, k, v, repeats),
            }
        )
    return rows


def _fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v)


def _explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ v


def _time_ms(fn: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        fn(q, k, v)
        start = time.perf_counter()
        for _ in range(repeats):
            fn(q, k, v)
    return round((time.perf_counter() - start) / repeats * 1000, 3)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _write(out: Path, suite: str, results: list[dict[str, Any]], budget: dict[str, Any]) -> None:
    (out / "results.json").write_text(json.dumps({"suite": suite, "budget": budget, "results": results}, indent=2))
    columns = sorted({k for r in results for k in r if k not in ("overrides", "budget")}, key=_column_order)
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    (out / "results.md").write_text(markdown_table(results))
    if results:
        from training.plots import plot_bars

        plot_bars(
            [r["variant"] for r in results],
            [100 * r["test_accuracy"] for r in results],
            "test accuracy %",
            out / "accuracy.png",
        )
        plot_bars(
            [r["variant"] for r in results],
            [r["train_images_per_s"] for r in results],
            "training images/s",
            out / "train_speed.png",
        )


def _column_order(name: str) -> tuple[int, str]:
    first = ["variant", "tokens", "parameters", "test_accuracy", "shuffled_patch_accuracy", "mflops_per_image"]
    return (first.index(name) if name in first else len(first), name)


def markdown_table(results: list[dict[str, Any]]) -> str:
    """The results as a Markdown table, for docs/RESULTS.md."""
    keys = _table_keys(results)
    head = [
        "variant",
        "tokens",
        "params",
        "test acc %",
        "shuffled acc %",
        "MFLOPs/img",
        "train img/s",
        "latency ms",
        "infer img/s",
        "activations MB/128",
    ]
    head = [h for h, k in zip(head, _ALL_KEYS, strict=True) if k in keys]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in results:
        cells = [_cell(k, r.get(k)) for k in keys]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


_ALL_KEYS = [
    "variant",
    "tokens",
    "parameters",
    "test_accuracy",
    "shuffled_patch_accuracy",
    "mflops_per_image",
    "train_images_per_s",
    "latency_ms",
    "images_per_s",
    "activation_mb_per_128",
]


def _table_keys(results: list[dict[str, Any]]) -> list[str]:
    shuffled = any("shuffled_patch_accuracy" in r for r in results)
    return [k for k in _ALL_KEYS if k != "shuffled_patch_accuracy" or shuffled]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key in ("test_accuracy", "shuffled_patch_accuracy"):
        return f"{100 * value:.2f}"
    if key == "parameters":
        return f"{value:,}"
    return str(value)


def _print_table(results: list[dict[str, Any]]) -> None:
    print(markdown_table(results), end="")
