"""``python -m training ship``: the whole recipe of the shipped model, in one command.

1. ``base``: the ViT trained from scratch on MNIST (the ``base`` preset);
2. ``shipped``: continued from it with outlier exposure and typed digits (the ``shipped`` preset);
3. ``trust --write``: temperature and not-a-digit threshold fitted on validation data and stored
   in the checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from training.config import PRESETS, TrainConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="MNIST root or folder with the .gz files")
    p.add_argument("--download", action="store_true", help="download MNIST into --data-dir if missing")
    p.add_argument("--output", type=Path, default=Path("checkpoints/vit-digits.safetensors"))
    p.add_argument("--run-dir", type=Path, default=Path("runs"), help="runs go to <run-dir>/base and <run-dir>/shipped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--limit", type=int, default=0, help="only the first N training images (a quick check)")
    p.add_argument("--epochs-scale", type=float, default=1.0, help="scale both stages' epochs (a quick check)")
    p.add_argument("--pictures-scale", type=float, default=1.0, help="scale the generated picture sets (a quick check)")


def run_ship(args: argparse.Namespace) -> dict[str, Any]:
    from training.train import run
    from training.trust import run_trust

    common = dict(data_dir=args.data_dir, download=args.download, run_dir=args.run_dir, seed=args.seed,
                  device=args.device, limit=args.limit)  # fmt: skip

    def stage(preset: str, **extra: Any) -> TrainConfig:
        cfg = TrainConfig(**(PRESETS[preset] | extra), name=preset, **common)
        return dataclasses.replace(cfg, epochs=max(1, round(cfg.epochs * args.epochs_scale)))

    def scaled(n: int) -> int:
        return max(1, round(n * args.pictures_scale))

    run(stage("base"))
    shipped = PRESETS["shipped"]
    run(
        stage(
            "shipped",
            init=args.run_dir / "base" / "best.safetensors",
            output=args.output,
            outliers_per_kind=scaled(shipped["outliers_per_kind"]),
            typed_digits=scaled(shipped["typed_digits"]),
        )
    )
    trust = argparse.Namespace(
        checkpoint=args.output,
        data_dir=args.data_dir,
        compare=[],
        per_kind=scaled(500),
        staged=scaled(2000),
        write=True,
        out_dir=None,
    )
    return run_trust(trust)
