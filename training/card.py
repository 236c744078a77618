"""``python -m training card``: the model card of a checkpoint, from the checkpoint itself, its
run's metrics and a fresh evaluation on the MNIST test set. Writes ``README.md`` and small PNGs."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import load_checkpoint
from model.factory import count_parameters
from training.data import load_split, prepare_root
from training.evaluate import evaluate_mnist
from training.plots import plot_curves


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, default=Path("checkpoints/vit-digits.safetensors"))
    p.add_argument("--run", type=Path, default=Path("runs/shipped"), help="the training run (its metrics.jsonl)")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--out-dir", type=Path, default=Path("checkpoints"))
    p.add_argument("--hardware", default="2 CPU cores (x86_64), no GPU")
    p.add_argument("--reproduce", default="", help="the command that reproduces the checkpoint")
    p.add_argument("--notes", type=Path, help="a Markdown file appended to the card")
    p.add_argument(
        "--trust", type=Path, help="a `trust` report folder to include (default: runs/trust/<checkpoint name>)"
    )


def time_to_reach(records: list[dict[str, Any]], targets: tuple[float, ...] = (0.99, 0.993, 0.995)) -> dict[str, Any]:
    """Epoch and cumulative training seconds when validation accuracy first reached each target."""
    out: dict[str, Any] = {}
    seconds = 0.0
    for r in records:
        seconds += r["epoch_s"]
        for t in targets:
            if f"{t:.3f}" not in out and r["val_acc"] >= t:
                out[f"{t:.3f}"] = {"epoch": r["epoch"], "train_s": round(seconds, 1)}
    return out


def run_card(args: argparse.Namespace) -> Path:
    ckpt = load_checkpoint(args.checkpoint)
    metrics = args.run / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(
            f"the card draws the training curves from {metrics}, which the run that trained the checkpoint "
            "writes (make train: runs/shipped); pass that run's folder as --run"
        )
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot_curves(records, args.out_dir / "curves.png")
    test = load_split(prepare_root(args.data_dir), train=False)
    report = evaluate_mnist(ckpt, test, torch.device("cpu"), args.out_dir / "eval")
    (args.out_dir / "eval" / "confusion.png").replace(args.out_dir / "confusion.png")
    (args.out_dir / "eval" / "misclassified.png").replace(args.out_dir / "misclassified.png")
    reached = time_to_reach(records)
    training = ckpt.meta.training
    cfg = ckpt.meta.config
    lines = [
        f"# Model card: `{args.checkpoint.name}`",
        "",
        f"A from-scratch Vision Transformer for MNIST digits: {cfg.stem} stem, patch {cfg.patch_size} "
        f"({cfg.grid_size}x{cfg.grid_size} grid), width {cfg.dim}, depth {cfg.depth}, {cfg.heads} heads, "
        f"{cfg.pos_embed} positions, {cfg.pool} pooling; {count_parameters(ckpt.model):,} parameters; "
        f"{args.checkpoint.stat().st_size / 1e6:.2f} MB.",
        "",
        "| | |",
        "| --- | --- |",
        f"| test accuracy (10,000 MNIST test images) | **{100 * report['accuracy']:.2f}%** "
        f"({report['errors']} errors) |",
        f"| best validation accuracy (5,000 held-out training images) | {100 * training['val_accuracy']:.2f}% "
        f"at epoch {training['epoch']} of {training['epochs']} |",
        f"| training wall time | {sum(r['epoch_s'] for r in records) / 60:.1f} min of epochs "
        f"(+ validation), on {args.hardware} |",
        *[
            f"| time to {100 * float(t):.1f}% validation accuracy | epoch {v['epoch']}, {v['train_s'] / 60:.1f} min |"
            for t, v in reached.items()
        ],
        f"| dataset sha256 (the four extracted files) | `{training['dataset_sha256']}` |",
        f"| checkpoint sha256 | `{ckpt.sha256}` |",
        f"| trained | {training['created']}, commit `{training['git_commit'][:12]}`, "
        f"torch {training['versions']['torch']} |",
        "",
        "## Reproduce",
        "",
        "```bash",
        args.reproduce
        or "python -m training ship --data-dir ../shared/data/mnist --output checkpoints/vit-digits.safetensors",
        f"python -m training evaluate --checkpoint {shlex.quote(str(args.checkpoint))} --data-dir ../shared/data/mnist",
        "```",
        "",
        "`ship` trains a CNN teacher (unless `--distill none`), runs the `base` preset from scratch, "
        "continues with the `shipped` preset from its best checkpoint, both distilled from the teacher, then "
        "fits the calibration (`trust --write`). Recipe of the last stage: " + _recipe(training.get("recipe", {})),
        "",
        "## Per-class precision and recall (test set)",
        "",
        "| digit | precision | recall | support |",
        "| --- | --- | --- | --- |",
        *[
            f"| {c} | {m['precision']:.4f} | {m['recall']:.4f} | {m['support']} |"
            for c, m in report["per_class"].items()
        ],
        "",
        "![training curves](curves.png)",
        "",
        "![confusion matrix](confusion.png)",
        "",
        "Misclassified test digits (true→predicted):",
        "",
        "![misclassified](misclassified.png)",
        "",
        "## Training log (per epoch)",
        "",
        "| epoch | train loss | train acc | val acc | images/s | epoch s |",
        "| --- | --- | --- | --- | --- | --- |",
        *[
            f"| {r['epoch']} | {r['train_loss']:.4f} | {r['train_acc']:.4f} | {r['val_acc']:.4f} | "
            f"{r['images_per_s']:.0f} | {r['epoch_s']:.0f} |"
            for r in records
        ],
    ]
    trust = args.trust or Path("runs/trust") / args.checkpoint.stem
    if (trust / "trust.md").is_file():
        shutil.copyfile(trust / "reliability.png", args.out_dir / "reliability.png")
        lines += [
            "",
            "## Answers a caller can trust (`python -m training trust`)",
            "",
            (trust / "trust.md").read_text(),
            "![reliability diagrams](reliability.png)",
        ]
    if args.notes:
        lines += ["", args.notes.read_text()]
    path = args.out_dir / "README.md"
    path.write_text("\n".join(lines) + "\n")
    for leftover in (args.out_dir / "eval").iterdir():
        leftover.unlink()
    (args.out_dir / "eval").rmdir()
    print(f"test accuracy {report['accuracy']:.4f}; card written to {path}")
    return path


def _recipe(recipe: dict[str, Any]) -> str:
    """The training hyper-parameters of the recipe; paths and run plumbing are left out."""
    plumbing = {
        "model",
        "data_dir",
        "download",
        "run_dir",
        "name",
        "output",
        "device",
        "threads",
        "dry_run",
        "limit",
        "init",
    }
    return ", ".join(f"{k}={v}" for k, v in recipe.items() if k not in plumbing) or "see the checkpoint's metadata"
