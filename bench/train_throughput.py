"""Training throughput of our ViT vs timm's VisionTransformer at the same configuration.

Both train on the same synthetic MNIST-shaped batches with AdamW; rounds alternate between the
two models so that drift in the machine's speed affects both alike. Prints images/s per round,
the medians and the ratio ours / timm (>= 1.0 means ours is at least as fast).

    .venv/bin/python bench/train_throughput.py [--batch-size 128] [--rounds 5] [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from model import ViTConfig, build_model, count_parameters


def images_per_s(
    model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int
) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * x.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # the plain ViT both implementations can build: linear patch embedding, patch 4 (7x7 grid),
    # width 64, depth 6, 4 heads, learned positions, class token
    config = ViTConfig(stem="linear")
    models = {"ours": build_model(config), "timm": build_model(config.replace(impl="timm"))}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}
    x = torch.randn(args.batch_size, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch_size,))
    print(f"config: {config}")
    print(f"parameters: ours {count_parameters(models['ours']):,}  timm {count_parameters(models['timm']):,}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    for name in models:  # warm-up
        images_per_s(models[name], opts[name], x, y, 3)
    results: dict[str, list[float]] = {name: [] for name in models}
    for r in range(args.rounds):
        for name in ("ours", "timm") if r % 2 == 0 else ("timm", "ours"):
            results[name].append(images_per_s(models[name], opts[name], x, y, args.steps))
        print(f"round {r + 1}: ours {results['ours'][-1]:7.0f} img/s   timm {results['timm'][-1]:7.0f} img/s")
    ours, timm = statistics.median(results["ours"]), statistics.median(results["timm"])
    print(f"median: ours {ours:.0f} img/s, timm {timm:.0f} img/s, ratio ours/timm {ours / timm:.3f}")


if __name__ == "__main__":
    main()
