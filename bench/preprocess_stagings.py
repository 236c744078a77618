"""Accuracy and flagged share per staging of the service's preprocessing, beside another checkout's.

Draws ``--per-staging`` MNIST test digits in every staging of ``training/pictures.py`` (the same
pictures for both), preprocesses each with ``model/preprocess.py`` of this checkout and of
``--baseline DIR`` (e.g. ``git worktree add /tmp/base <rev>``), and scores them with one checkpoint
and its calibration (pictures refused as ``no_digit`` count as wrong and flagged). The model is the
same for both columns: the difference is the preprocessing's alone.

    .venv/bin/python bench/preprocess_stagings.py --baseline /tmp/base --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.preprocess_cost import load_preprocess  # noqa: E402


def scores(pre: ModuleType, pictures: list[tuple[Image.Image, int]], ckpt) -> tuple[float, float]:
    """(accuracy, flagged share) of ``pictures`` through ``pre`` and the checkpoint."""
    inputs, labels, refused = [], [], 0
    for image, label in pictures:
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        try:
            inputs.append(pre.prepare(pre.decode_image(buffer.getvalue())).model_input)
        except pre.ImageError:
            refused += 1
            continue
        labels.append(label)
    with torch.no_grad():
        logits = ckpt.model(torch.from_numpy(np.stack(inputs)))
    cal = ckpt.meta.calibration
    right = int((logits.argmax(1).numpy() == np.asarray(labels)).sum())
    flagged = int((~cal.is_digit(cal.scores(logits))).sum()) + refused
    return right / len(pictures), flagged / len(pictures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout of this repository")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "vit-digits.safetensors")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "tests" / "data" / "mnist")
    parser.add_argument("--per-staging", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    from model.checkpoint import load_checkpoint
    from training.data import load_split, prepare_root
    from training.pictures import HELD_OUT_STAGINGS, STAGINGS, stage_digit

    test = load_split(prepare_root(args.data_dir), train=False)
    ckpt = load_checkpoint(args.checkpoint)
    ckpt.model.eval()
    checkouts = {"this": load_preprocess(ROOT, "pre_this"), "baseline": load_preprocess(args.baseline, "pre_base")}
    n = min(args.per_staging, len(test))
    print(f"{args.checkpoint.name}, {n} MNIST test digits per staging; accuracy / flagged not-a-digit")
    print("| staging | this checkout | baseline |\n| --- | --- | --- |")
    for staging in STAGINGS:
        rng = np.random.default_rng([args.seed, STAGINGS.index(staging)])
        pictures = [(stage_digit(test.images[i].numpy(), rng, staging), int(test.labels[i])) for i in range(n)]
        cells = [f"{100 * a:.1f}% / {100 * f:.1f}%" for a, f in (scores(m, pictures, ckpt) for m in checkouts.values())]
        held = " (held out)" if staging in HELD_OUT_STAGINGS else ""
        print(f"| {staging}{held} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
