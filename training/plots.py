"""Small PNG figures for reports (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def plot_confusion(matrix: Sequence[Sequence[int]], path: Path) -> None:
    """Confusion matrix, log-scaled colours so the few errors are visible beside the diagonal."""
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=100)
    ax.imshow(np.log1p(m), cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=6, color="white" if i == j else "black")
    ax.set(xlabel="predicted", ylabel="true", xticks=range(m.shape[1]), yticks=range(m.shape[0]))
    ax.set_title("confusion matrix", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_digit_grid(images: np.ndarray, captions: Sequence[str], path: Path, cols: int = 8) -> None:
    """A grid of 28x28 digits with a caption each (e.g. ``true→predicted``)."""
    n = max(len(images), 1)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 1.05), dpi=100, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(images):
            ax.imshow(images[k], cmap="gray")
            ax.set_title(captions[k], fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_attention_grid(
    images: np.ndarray, maps: np.ndarray, captions: Sequence[str], path: Path, cols: int = 8
) -> None:
    """Digits (N, 28, 28) with their attention maps (N, g, g) upsampled and overlaid."""
    n = len(images)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.25), dpi=100, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            ax.imshow(images[k], cmap="gray")
            ax.imshow(maps[k], cmap="inferno", alpha=0.55, extent=(-0.5, 27.5, 27.5, -0.5), interpolation="bilinear")
            ax.set_title(captions[k], fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curves(records: Sequence[dict[str, float]], path: Path) -> None:
    """Training loss and validation accuracy against epoch."""
    epochs = [r["epoch"] for r in records]
    fig, (a, b) = plt.subplots(1, 2, figsize=(7, 2.8), dpi=100)
    a.plot(epochs, [r["train_loss"] for r in records])
    a.set(xlabel="epoch", ylabel="train loss")
    b.plot(epochs, [100 * r["val_acc"] for r in records], label="validation")
    b.set(xlabel="epoch", ylabel="accuracy %")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_error_bars(
    labels: Sequence[str],
    values: Sequence[float],
    errors: Sequence[float] | Sequence[tuple[float, float]],
    ylabel: str,
    path: Path,
) -> None:
    """One bar per variant with its error bar (a standard deviation, or (below, above) extents),
    its value written on it. An accuracy axis starts near the lowest bar, and says so."""
    fig, ax = plt.subplots(figsize=(max(3.0, 0.9 * len(labels) + 1), 3.0), dpi=100)
    err = np.asarray(errors, dtype=float)
    yerr = err.T if err.ndim == 2 else err
    bars = ax.bar(range(len(values)), values, yerr=yerr, capsize=3, color="#0b57d0", ecolor="#444")
    ax.bar_label(bars, fmt="%.4g", fontsize=7, label_type="center", color="white")
    ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
    if values and min(values) > 0 and ylabel.startswith("test accuracy"):
        floor = max(0.0, np.floor(min(values) - 2))
        ax.set_ylim(floor, 100)
        ylabel = f"{ylabel} (axis from {floor:g})"
    ax.set_ylabel(ylabel, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curves_by_variant(runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Training loss against step (mean over seeds, band from min to max) and validation loss at
    each epoch's end (mean over seeds), one colour per variant."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.0), dpi=100)
    for k, (variant, seeds) in enumerate(runs.items()):
        curves = [np.asarray(r["train_curve"], dtype=float) for r in seeds if r.get("train_curve")]
        if not curves:
            continue
        colour = f"C{k % 10}"
        length = min(len(c) for c in curves)
        steps = curves[0][:length, 0]
        losses = np.stack([c[:length, 1] for c in curves])
        a.plot(steps, losses.mean(0), color=colour, lw=1, label=variant)
        a.fill_between(steps, losses.min(0), losses.max(0), color=colour, alpha=0.2, lw=0)
        epochs = [[e for e in r["epochs"] if e.get("val_loss") is not None] for r in seeds]
        n_epochs = min(len(e) for e in epochs)
        if n_epochs:
            val = np.array([[e[i]["val_loss"] for i in range(n_epochs)] for e in epochs])
            b.errorbar(range(1, n_epochs + 1), val.mean(0), yerr=val.std(0), color=colour, marker="o", ms=3, capsize=2)
    a.set(xlabel="step", ylabel="training loss", yscale="log")
    b.set(xlabel="epoch", ylabel="validation loss", yscale="log")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    a.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_reliability(curves: dict[str, dict[str, list[float]]], path: Path) -> None:
    """Reliability diagrams side by side: per confidence bin, accuracy against mean confidence.

    ``curves`` maps a panel title to ``{"confidence": [...], "accuracy": [...], "count": [...]}``
    (empty bins left out); the dashed diagonal is perfect calibration.
    """
    fig, axes = plt.subplots(1, len(curves), figsize=(3.4 * len(curves), 3.3), dpi=100, squeeze=False)
    for ax, (title, c) in zip(axes[0], curves.items(), strict=True):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="perfect")
        ax.plot(c["confidence"], c["accuracy"], marker="o", ms=3, label="model")
        ax.set(xlim=(0, 1.01), ylim=(0, 1.01), xlabel="confidence (bin mean)", ylabel="accuracy in bin")
        ax.set_title(title, fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
