"""``python -m training``: train, evaluate and run experiments from the command line."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model.config import ConfigError, ViTConfig
from training.config import PRESETS, AugmentConfig, TrainConfig

log = logging.getLogger("training")

# The train command's config flags are made from the fields of TrainConfig, ViTConfig and
# AugmentConfig, so that no field lacks its flag and no flag outlives its field: --<field> (dashes
# for underscores), typed by the field's annotation (a Literal gives the choices, a bool field off
# by default gives --<field>, one on by default --no-<field>), with its help below. A flag left out
# is None and keeps the preset's value.
_NOT_FLAGS = {
    "model": "a section: its fields (ViTConfig's) are flags",
    "augment": "a section: its fields (AugmentConfig's) are flags",
    "num_classes": "the data is MNIST: ten classes, which no flag can change",
}
_HELP: dict[str, str] = {
    # TrainConfig
    "epochs": "epochs to train",
    "batch_size": "global batch size",
    "lr": "peak learning rate",
    "min_lr": "learning rate at the end of the cosine decay",
    "weight_decay": "AdamW weight decay",
    "warmup_epochs": "epochs of linear warmup",
    "label_smoothing": "label smoothing of the digits' cross-entropy",
    "ema_decay": "0 disables the EMA of weights",
    "grad_clip": "max gradient norm; 0 disables",
    "val_size": "training images held out for model selection",
    "seed": "seed of the split, the initialisation and the batches",
    "limit": "use only the first N training images",
    "dry_run": "a few batches of one epoch",
    "device": "auto | cpu | cuda | cuda:N",
    "amp": "mixed precision on CUDA (auto: bf16 where supported)",
    "threads": "torch CPU threads (0: default)",
    "data_dir": "MNIST root or folder with the .gz files (default: data)",
    "download": "download MNIST into --data-dir if missing",
    "run_dir": "where runs go (default: runs)",
    "name": "run name: outputs go to <run-dir>/<name>/",
    "output": "also copy the best checkpoint here",
    "init": "start from this checkpoint's weights (same model config)",
    "outlier_weight": "weight of the uniform-target loss on non-digits; 0: off",
    "outliers_per_kind": "non-digit pictures drawn per training kind",
    "typed_digits": "typed digits added to the training digits",
    "staged_digits": "training digits staged as callers send them, added to them",
    "stem_lr_scale": "learning-rate factor of the linear patch embedding's kernel (its decay divided by it)",
    "export": "do not write the ONNX serving export next to the best checkpoint",
    "distill": "soft: KL at --distill-tau; hard: top class; token: top class on --distill-token's head",
    "distill_alpha": "the teacher's share of the digits' loss",
    "distill_tau": "temperature of soft distillation",
    "teacher": "the teacher's weights (written by the ship command)",
    "canvas": "place each digit at a random position on a canvas of this side (--image-size); 0: off",
    # ViTConfig
    "image_size": "side of the image the model takes; the 28x28 digits are resized to it",
    "patch_size": "side of a square patch; must divide --image-size",
    "in_chans": "input channels: 1 grayscale, 3 the digit replicated to RGB",
    "dim": "token width",
    "depth": "transformer blocks",
    "heads": "attention heads per block; must divide --dim",
    "mlp_ratio": "hidden width of each block's MLP, as a multiple of --dim",
    "dropout": "dropout after the embedding, in the MLP and after attention's projection",
    "attn_dropout": "dropout on the attention probabilities",
    "drop_path": "stochastic-depth rate of the last block",
    "pos_embed": "position code",
    "pool": "cls: the class token; mean: the mean of the patch tokens",
    "stem": "linear patch embedding or a conv stem (power-of-two patch size)",
    "impl": "this package's ViT or timm's",
    "attention": "token mixer of every block (all but full need --impl ours --pool mean)",
    "window": "side of the attention window (and of the dilated grid) in patches (--attention window|grid)",
    "kv_pool": "keys and values averaged over N x N patches (--attention kvpool)",
    "distill_token": "a distillation token with its own head, taught by the teacher (--distill token)",
    # AugmentConfig
    "rotate": "max rotation in degrees",
    "translate": "max shift as a fraction of the side",
    "scale": "max zoom change",
    "shear": "max shear in degrees",
}
_CHOICES: dict[str, tuple[Any, ...]] = {"in_chans": (1, 3)}  # fields whose values the annotation does not list
_OUTLIERS = "not-a-digit training (outlier exposure, see training/pictures.py)"
_DISTILL = "distillation from a CNN teacher (see training/teacher.py)"
# TrainConfig's fields outside the "training" group
_GROUP = {
    "outlier_weight": _OUTLIERS,
    "outliers_per_kind": _OUTLIERS,
    "typed_digits": _OUTLIERS,
    "staged_digits": _OUTLIERS,
    "distill": _DISTILL,
    "distill_alpha": _DISTILL,
    "distill_tau": _DISTILL,
    "teacher": _DISTILL,
}


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
    groups = {title: p.add_argument_group(title) for title in ("training", _OUTLIERS, _DISTILL)}
    for f in flag_fields(TrainConfig):
        _add_flag(groups[_GROUP.get(f.name, "training")], TrainConfig, f)
    model = p.add_argument_group("model")
    for f in flag_fields(ViTConfig):
        _add_flag(model, ViTConfig, f)
    augmentation = p.add_argument_group("augmentation")
    for f in flag_fields(AugmentConfig):
        _add_flag(augmentation, AugmentConfig, f)
    augmentation.add_argument("--no-augment", action="store_true", help="turn augmentation off")


def flag_fields(config: type[Any]) -> list[dataclasses.Field[Any]]:
    """The fields of a config dataclass that the train command has a flag for."""
    return [f for f in dataclasses.fields(config) if f.name not in _NOT_FLAGS]


def _add_flag(group: argparse._ArgumentGroup, config: type[Any], f: dataclasses.Field[Any]) -> None:
    """The flag of one config field, named, typed and explained as the comment above _NOT_FLAGS says."""
    if f.name not in _HELP:
        raise LookupError(
            f"{config.__name__}.{f.name} has no flag: give it help in {__name__}._HELP or list it in _NOT_FLAGS"
        )
    flag, help_ = "--" + f.name.replace("_", "-"), _HELP[f.name]
    hint = typing.get_type_hints(config)[f.name]
    if hint is bool:  # a switch that flips the field's default
        on = f.default is True
        name = "--no-" + flag.removeprefix("--") if on else flag
        group.add_argument(name, dest=f.name, action="store_false" if on else "store_true", default=None, help=help_)
        return
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # Path | None: the flag gives a Path
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) is typing.Literal:
        group.add_argument(flag, choices=typing.get_args(hint), help=help_)
    else:
        group.add_argument(flag, type=hint, choices=_CHOICES.get(f.name), help=help_)


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
    model = dataclasses.replace(base.model, **_given(args, ViTConfig))
    augment = (
        AugmentConfig.off() if args.no_augment else dataclasses.replace(base.augment, **_given(args, AugmentConfig))
    )
    train = _given(args, TrainConfig)
    if args.preset == "shipped" and "init" not in train and not args.resume:
        raise ConfigError("the shipped recipe continues from the base model: pass --init runs/base/best.safetensors")
    return dataclasses.replace(base, model=model, augment=augment, **train)


def _given(args: argparse.Namespace, config: type[Any]) -> dict[str, Any]:
    """The values of the flags of ``config``'s fields that were given."""
    return {f.name: getattr(args, f.name) for f in flag_fields(config) if getattr(args, f.name) is not None}


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
