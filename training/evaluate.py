"""``python -m training evaluate``: test accuracy, per-class metrics, confusion matrix, errors."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import LoadedCheckpoint, load_checkpoint
from model.device import resolve_device
from model.factory import forward_with_attention, match_channels
from model.preprocess import IMAGE_SUFFIXES, ImageError, prepare_bytes
from model.rollout import attention_rollout
from training.data import Split, load_split, prepare_root, to_input
from training.engine import predict
from training.plots import plot_attention_grid, plot_confusion, plot_digit_grid

log = logging.getLogger(__name__)


def classification_report(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix (rows = true class)."""
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels, preds), torch.ones_like(labels), accumulate=True)
    tp = confusion.diag().double()
    precision = tp / confusion.sum(0).double().clamp_min(1)
    recall = tp / confusion.sum(1).double().clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    return {
        "accuracy": float(tp.sum() / max(len(labels), 1)),
        "images": len(labels),
        "errors": int(len(labels) - tp.sum()),
        "per_class": {
            str(c): {
                "precision": round(float(precision[c]), 5),
                "recall": round(float(recall[c]), 5),
                "f1": round(float(f1[c]), 5),
                "support": int(confusion[c].sum()),
            }
            for c in range(num_classes)
        },
        "confusion_matrix": confusion.tolist(),
    }


def evaluate_mnist(ckpt: LoadedCheckpoint, test: Split, device: torch.device, out_dir: Path) -> dict[str, Any]:
    """Score on MNIST test; write report.json, confusion.png and misclassified.png to ``out_dir``."""
    logits = predict(ckpt.model, test, device)
    preds = logits.argmax(1)
    report = classification_report(test.labels, preds, ckpt.meta.config.num_classes)
    report |= {"checkpoint": str(ckpt.path), "sha256": ckpt.sha256}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    plot_confusion(report["confusion_matrix"], out_dir / "confusion.png")
    wrong = torch.nonzero(preds != test.labels).flatten()[:64]
    captions = [f"{int(test.labels[i])}→{int(preds[i])}" for i in wrong]
    plot_digit_grid(test.images[wrong].numpy(), captions, out_dir / "misclassified.png")
    return report


def evaluate_images(ckpt: LoadedCheckpoint, folder: Path, device: torch.device) -> dict[str, Any]:
    """Predict every image file under ``folder`` through the real-world preprocessing.

    A file's label is its parent folder's name when that is a digit (``7/photo.jpg``); accuracy
    is reported over the labelled files.
    """
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    pre = ckpt.meta.preprocess
    results, correct, labelled = [], 0, 0
    for path in files:
        entry: dict[str, Any] = {"file": str(path.relative_to(folder))}
        try:
            prepared = prepare_bytes(path.read_bytes(), pre.mean, pre.std, pre.image_size)
            x = torch.from_numpy(prepared.model_input[None]).to(device)
        except ImageError as exc:
            results.append(entry | {"error": str(exc)})
            continue
        with torch.no_grad():
            probs = ckpt.model(match_channels(x, ckpt.meta.config.in_chans)).softmax(-1)[0]
        entry |= {"prediction": int(probs.argmax()), "confidence": round(float(probs.max()), 4)}
        if path.parent.name.isdigit():
            labelled += 1
            correct += entry["prediction"] == int(path.parent.name)
            entry["label"] = int(path.parent.name)
        results.append(entry)
    return {"files": results, "labelled": labelled, "accuracy": correct / labelled if labelled else None}


def attention_figure(ckpt: LoadedCheckpoint, test: Split, device: torch.device, path: Path) -> None:
    """Rollout maps over the first 16 test digits and the first 8 the model gets wrong."""
    preds = predict(ckpt.model, test, device).argmax(1)
    wrong = torch.nonzero(preds != test.labels).flatten()[:8]
    index = torch.cat([torch.arange(16), wrong])
    x = match_channels(to_input(test.images[index], device), ckpt.meta.config.in_chans)
    with torch.no_grad():
        _, attn = forward_with_attention(ckpt.model, x)
    maps = attention_rollout(attn.float().cpu(), ckpt.meta.config.num_prefix_tokens)
    captions = [
        f"{int(test.labels[i])}→{int(preds[i])}" if preds[i] != test.labels[i] else str(int(preds[i])) for i in index
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_attention_grid(test.images[index].numpy(), maps, captions, path)


def run_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, device=device)
    out_dir = args.out_dir or Path("runs/eval") / args.checkpoint.stem
    if args.images:
        report = evaluate_images(ckpt, args.images, device)
        for entry in report["files"]:
            print(json.dumps(entry))
        if report["accuracy"] is not None:
            print(f"accuracy {report['accuracy']:.4f} on {report['labelled']} labelled images")
        return report
    test = load_split(prepare_root(args.data_dir, download=args.download), train=False)
    if args.limit:
        test = test.subset(torch.arange(min(args.limit, len(test))))
    report = evaluate_mnist(ckpt, test, device, out_dir)
    if args.attention_figure:
        attention_figure(ckpt, test, device, args.attention_figure)
    print(f"test accuracy {report['accuracy']:.4f} ({report['errors']} errors in {report['images']} images)")
    print("class  precision  recall")
    for c, m in report["per_class"].items():
        print(f"{c:>5}  {m['precision']:9.4f}  {m['recall']:6.4f}")
    print(f"reports in {out_dir}/ (report.json, confusion.png, misclassified.png)")
    return report
