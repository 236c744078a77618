"""``python -m training``: train, evaluate and run experiments from the command line."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model.config import ConfigError
from training.config import PRESETS, AugmentConfig, TrainConfig

log = logging.getLogger("training")

# flag -> (section, field); section "" is TrainConfig itself
_MODEL_FLAGS = (
    "patch_size",
    "dim",
    "depth",
    "heads",
    "mlp_ratio",
    "dropout",
    "attn_dropout",
    "drop_path",
    "pos_embed",
    "pool",
    "stem",
    "impl",
    "in_chans",
)
_AUGMENT_FLAGS = ("rotate", "translate", "scale", "shear")
_TRAIN_FLAGS = (
    "epochs",
    "batch_size",
    "lr",
    "min_lr",
    "weight_decay",
    "warmup_epochs",
    "label_smoothing",
    "ema_decay",
    "grad_clip",
    "val_size",
    "seed",
    "limit",
    "device",
    "amp",
    "threads",
    "data_dir",
    "run_dir",
    "name",
    "output",
    "init",
    "outlier_weight",
    "outliers_per_kind",
    "typed_digits",
    "staged_digits",
    "distill",
    "distill_alpha",
    "distill_tau",
    "teacher",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub.add_parser("train", help="train a model on MNIST and write its checkpoint"))
    _add_evaluate(sub.add_parser("evaluate", help="score a checkpoint on MNIST test or on image files"))
    from training.card import add_arguments as add_card_arguments
    from training.experiments import add_arguments as add_experiment_arguments
    from training.ship import add_arguments as add_ship_arguments
    from training.trust import add_arguments as add_trust_arguments

    add_experiment_arguments(sub.add_parser("experiments", help="run a suite of comparison experiments"))
    add_card_arguments(sub.add_parser("card", help="write the model card of a checkpoint"))
    add_ship_arguments(
        sub.add_parser("ship", help="the shipped model's whole recipe: base, outlier exposure, trust --write")
    )
    add_trust_arguments(
        sub.add_parser("trust", help="calibrate a checkpoint, fit its not-a-digit threshold, report both")
    )
    export = sub.add_parser("export", help="write a checkpoint's ONNX serving artifact (checked against PyTorch)")
    export.add_argument("checkpoint", type=Path, help="the .safetensors checkpoint")
    export.add_argument("--output", type=Path, help="where to write it (default: next to the checkpoint, .onnx)")
    return parser


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default="default", help="named recipe (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue runs/<name> from its last epoch")
    p.add_argument("--dry-run", action="store_true", help="a few batches of one epoch")
    p.add_argument("--download", action="store_true", help="download MNIST into --data-dir if missing")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="global batch size")
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--min-lr", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--warmup-epochs", type=float)
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--ema-decay", type=float, help="0 disables the EMA of weights")
    g.add_argument("--grad-clip", type=float)
    g.add_argument("--val-size", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--limit", type=int, help="use only the first N training images")
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--amp", choices=("auto", "none", "bf16", "fp16"))
    g.add_argument("--threads", type=int, help="torch CPU threads (0: default)")
    g.add_argument("--data-dir", type=Path, help="MNIST root or folder with the .gz files (default: data)")
    g.add_argument("--run-dir", type=Path)
    g.add_argument("--name", help="run name: outputs go to <run-dir>/<name>/")
    g.add_argument("--output", type=Path, help="also copy the best checkpoint here")
    g.add_argument("--init", type=Path, help="start from this checkpoint's weights (same model config)")
    o = p.add_argument_group("not-a-digit training (outlier exposure, see training/pictures.py)")
    o.add_argument("--outlier-weight", type=float, help="weight of the uniform-target loss on non-digits; 0: off")
    o.add_argument("--outliers-per-kind", type=int, help="non-digit pictures drawn per training kind")
    o.add_argument("--typed-digits", type=int, help="typed digits added to the training digits")
    o.add_argument("--staged-digits", type=int, help="training digits staged as callers send them, added to them")
    d = p.add_argument_group("distillation from a CNN teacher (see training/teacher.py)")
    d.add_argument("--distill", choices=("none", "soft", "hard"), help="soft: KL at --distill-tau; hard: top class")
    d.add_argument("--distill-alpha", type=float, help="the teacher's share of the digits' loss")
    d.add_argument("--distill-tau", type=float, help="temperature of soft distillation")
    d.add_argument("--teacher", type=Path, help="the teacher's weights (written by the ship command)")
    m = p.add_argument_group("model")
    m.add_argument("--patch-size", type=int)
    m.add_argument("--dim", type=int)
    m.add_argument("--depth", type=int)
    m.add_argument("--heads", type=int)
    m.add_argument("--mlp-ratio", type=float)
    m.add_argument("--dropout", type=float)
    m.add_argument("--attn-dropout", type=float)
    m.add_argument("--drop-path", type=float)
    m.add_argument("--pos-embed", choices=("learned", "sincos2d", "none"))
    m.add_argument("--pool", choices=("cls", "mean"))
    m.add_argument("--stem", choices=("linear", "conv"))
    m.add_argument("--impl", choices=("ours", "timm"))
    m.add_argument("--in-chans", type=int, choices=(1, 3))
    a = p.add_argument_group("augmentation")
    a.add_argument("--rotate", type=float, help="max rotation in degrees")
    a.add_argument("--translate", type=float, help="max shift as a fraction of the side")
    a.add_argument("--scale", type=float, help="max zoom change")
    a.add_argument("--shear", type=float, help="max shear in degrees")
    a.add_argument("--no-augment", action="store_true", help="turn augmentation off")


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, default=Path("checkpoints/vit-digits.safetensors"))
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--download", action="store_true")
    p.add_argument(
        "--images", type=Path, help="score a folder of image files instead (label = parent folder name if a digit)"
    )
    p.add_argument("--limit", type=int, default=0, help="only the first N test images")
    p.add_argument("--device", default="auto")
    p.add_argument("--out-dir", type=Path, help="where reports go (default: runs/eval/<checkpoint name>)")
    p.add_argument("--attention-figure", type=Path, help="also draw attention rollout over sample digits (PNG)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The preset, with every flag the user gave applied on top."""
    preset: dict[str, Any] = dict(PRESETS[args.preset])
    base = TrainConfig(**preset)
    model = dataclasses.replace(base.model, **_given(args, _MODEL_FLAGS))
    augment = (
        AugmentConfig.off() if args.no_augment else dataclasses.replace(base.augment, **_given(args, _AUGMENT_FLAGS))
    )
    train = _given(args, _TRAIN_FLAGS)
    if args.preset == "shipped" and "init" not in train and not args.resume:
        raise ConfigError("the shipped recipe continues from the base model: pass --init runs/base/best.safetensors")
    return dataclasses.replace(
        base,
        model=model,
        augment=augment,
        dry_run=args.dry_run or base.dry_run,
        download=args.download or base.download,
        **train,
    )


def _given(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from model.checkpoint import CheckpointError
    from model.device import DeviceError
    from training.data import DataError

    try:
        if args.command == "train":
            from training.train import run

            run(config_from_args(args), resume=args.resume)
        elif args.command == "evaluate":
            from training.evaluate import run_evaluate

            run_evaluate(args)
        elif args.command == "ship":
            from training.ship import run_ship

            run_ship(args)
        elif args.command == "trust":
            from training.trust import run_trust

            run_trust(args)
        elif args.command == "export":
            from training.export import run_export

            run_export(args.checkpoint, args.output)
        elif args.command == "card":
            from training.card import run_card

            run_card(args)
        else:
            from training.experiments import run_experiments

            run_experiments(args)
    except (ConfigError, DataError, CheckpointError, DeviceError, FileNotFoundError) as exc:
        parser.exit(2, f"error: {exc}\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
