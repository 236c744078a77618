"""Training configuration and named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from model.config import ConfigError, ViTConfig

Amp = Literal["auto", "none", "bf16", "fp16"]


@dataclass(frozen=True)
class AugmentConfig:
    """Random affine augmentation, applied to whole batches on the training device."""

    rotate: float = 10.0  # max rotation, degrees
    translate: float = 0.1  # max shift, as a fraction of the image side
    scale: float = 0.1  # zoom in [1 - scale, 1 + scale]
    shear: float = 5.0  # max shear, degrees

    @property
    def enabled(self) -> bool:
        return any((self.rotate, self.translate, self.scale, self.shear))

    @classmethod
    def off(cls) -> AugmentConfig:
        """No augmentation at all."""
        return cls(rotate=0.0, translate=0.0, scale=0.0, shear=0.0)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; saved in ``runs/<name>/config.json``.

    The defaults are the default recipe: the presets below and the experiments' base
    (``training/suites.py``) are each a set of changes to it."""

    # the default model: a conv stem on the 7x7 patch grid, which learns several times faster than
    # a linear patch embedding on this data (see docs/RESULTS.md, "stem")
    model: ViTConfig = field(default_factory=lambda: ViTConfig(stem="conv"))
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    epochs: int = 1
    batch_size: int = 64  # global batch; split evenly across distributed processes
    lr: float = 2e-3  # peak learning rate after warmup
    min_lr: float = 1e-5  # end of the cosine decay
    weight_decay: float = 0.05
    warmup_epochs: float = 0.2
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # 0 disables the EMA of weights
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    val_size: int = 5000  # images carved from the training set for model selection
    seed: int = 0
    limit: int = 0  # use only the first N training (and N // 5 test) images; 0 = all
    dry_run: bool = False  # a few batches of one epoch, to check the whole pipeline
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Amp = "auto"  # mixed precision on CUDA: auto picks bf16 where supported
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    data_dir: Path = Path("data")
    download: bool = False
    run_dir: Path = Path("runs")
    name: str = "default"
    output: Path | None = None  # also copy the best checkpoint here
    init: Path | None = None  # start from this checkpoint's weights (same model config) instead of scratch
    # outlier exposure (training/pictures.py): not-a-digit pictures of the training kinds, preprocessed
    # as the service would, are mixed into every batch (half a batch's worth) with a uniform target
    outlier_weight: float = 0.0  # weight of their loss; 0 turns outlier exposure off
    outliers_per_kind: int = 2000
    typed_digits: int = 0  # typed digits (shipped typefaces) added to the training digits
    # training digits staged as callers send them (training/pictures.py, FIT_STAGINGS only: the
    # held-out stagings stay unseen) and preprocessed as the service would, added to the training digits
    staged_digits: int = 0
    # learning-rate factor of the linear patch embedding's kernel (its decay is divided by it):
    # the experiments' control for the 3x faster effective stem of a replicated-RGB input
    stem_lr_scale: float = 1.0
    export: bool = True  # write the ONNX serving export next to the best checkpoint
    # knowledge distillation from a CNN teacher (training/teacher.py): none, soft (KL at distill_tau),
    # hard (the teacher's top class) or token (the top class, on the model's distillation token);
    # the teacher's share of the digits' loss is distill_alpha
    distill: Literal["none", "soft", "hard", "token"] = "none"
    distill_alpha: float = 0.5
    distill_tau: float = 2.0
    teacher: Path | None = None  # the teacher's weights (written by `python -m training ship`)
    # > 0: every digit (training, validation and test) at a random position on a blank canvas of
    # this side, the model's image_size, instead of resized to it: a task where every token may
    # hold part of the digit (the canvas suite); the positions are drawn once, from the seed
    # (training, validation) or a fixed one (test, so every run scores the same pictures)
    canvas: int = 0

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1; got {getattr(self, name)}")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ConfigError(f"need 0 <= min_lr <= lr and lr > 0; got lr={self.lr}, min_lr={self.min_lr}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1); got {self.label_smoothing}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1); got {self.ema_decay}")
        if self.outlier_weight < 0 or self.outliers_per_kind < 1 or self.typed_digits < 0 or self.staged_digits < 0:
            raise ConfigError(
                "outlier_weight, typed_digits and staged_digits cannot be negative; outliers_per_kind must be >= 1"
            )
        if self.stem_lr_scale <= 0:
            raise ConfigError(f"stem_lr_scale must be positive; got {self.stem_lr_scale}")
        if self.val_size < 0 or self.limit < 0 or self.warmup_epochs < 0:
            raise ConfigError("val_size, limit and warmup_epochs cannot be negative")
        if self.distill not in ("none", "soft", "hard", "token"):
            raise ConfigError(f"distill must be none, soft, hard or token; got {self.distill!r}")
        if (self.distill == "token") != self.model.distill_token:
            raise ConfigError(
                "distill='token' and the model's distill_token go together (the token's head learns "
                "from the teacher alone): pass both --distill token and --distill-token, or neither"
            )
        if self.distill != "none" and self.teacher is None:
            raise ConfigError("distillation needs the teacher's weights: pass --teacher PATH")
        if self.distill == "token" and not 0.0 < self.distill_alpha < 1.0:
            raise ConfigError(
                f"distill='token' needs 0 < distill_alpha < 1 (both heads serve, so both must learn); "
                f"got {self.distill_alpha}"
            )
        if not 0.0 <= self.distill_alpha <= 1.0 or self.distill_tau <= 0:
            raise ConfigError(
                f"need 0 <= distill_alpha <= 1 and distill_tau > 0; got {self.distill_alpha}, {self.distill_tau}"
            )
        if self.canvas:
            if self.canvas != self.model.image_size or self.canvas < 28:
                raise ConfigError(
                    f"canvas ({self.canvas}) must be the model's image_size ({self.model.image_size}), "
                    f"at least the digits' 28"
                )
            if self.outlier_weight or self.distill != "none":
                raise ConfigError("canvas runs take neither outlier exposure nor a teacher (both read 28x28 pictures)")
            if self.export:
                raise ConfigError(
                    "a canvas run's checkpoint is an experiment's, not a service's (the service centres "
                    "the digit in 28x28): pass --no-export"
                )
        if self.amp not in ("auto", "none", "bf16", "fp16"):
            raise ConfigError(f"amp must be auto, none, bf16 or fp16; got {self.amp!r}")

    @property
    def run_path(self) -> Path:
        return self.run_dir / self.name

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("data_dir", "run_dir", "output", "init", "teacher"):
            data[key] = None if data[key] is None else str(data[key])
        return data


# The named recipes, each a set of changes to the default recipe (TrainConfig's defaults, the
# "default" preset; the experiments' base in training/suites.py is one too). The shipped model's
# recipe (see checkpoints/README.md) takes two stages. "base": the default model with stochastic
# depth, a long schedule, larger batches, label smoothing and an EMA of the weights. "shipped":
# continues from the base model (--init) with outlier exposure, typed and staged digits, at a lower
# learning rate and without label smoothing (the service calibrates the probabilities afterwards:
# `trust`).
_BASE: dict[str, Any] = dict(
    model=TrainConfig().model.replace(drop_path=0.05),
    epochs=22,
    batch_size=128,
    lr=1.5e-3,
    warmup_epochs=1.0,
    label_smoothing=0.1,
    ema_decay=0.999,
)
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "base": _BASE,
    "shipped": _BASE
    | dict(
        epochs=4,
        lr=5e-4,
        warmup_epochs=0.3,
        label_smoothing=0.0,
        outlier_weight=0.5,
        outliers_per_kind=3000,
        typed_digits=3000,
        staged_digits=8000,
    ),
}
