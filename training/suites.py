"""The experiments' suites: each a question, the variants that answer it, the pairs its reading
compares, and what it measures besides accuracy.

A variant is a set of overrides of :data:`BASE` (model fields go to the model, the rest to
training); :func:`variant_config` makes one run's config from it. A suite's costs are measured on
fresh models by :func:`measure_costs`: the same figures for every variant, plus the extra
measurements the suite declares (:attr:`Suite.extra_costs`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from model.config import ViTConfig
from model.factory import build_model, count_parameters
from training.config import PRESETS, AugmentConfig, TrainConfig
from training.costs import (
    activation_bytes,
    attention_cost,
    flops_per_image,
    interleaved_speeds,
    pretrained_route_cost,
    step_peak_bytes,
)

log = logging.getLogger(__name__)

_MODEL_FIELDS = {f.name for f in dataclasses.fields(ViTConfig)}


@dataclass(frozen=True)
class Suite:
    """One question: its variants (overrides of model or training fields), the pairs its reading
    compares (A, B), and the budget it trains with when that differs from :data:`BASE`'s.

    ``extra_costs`` names the measurements the suite adds to its costs (each called once, with no
    arguments, its result stored under its name in ``costs.json``); ``shuffled_patches`` scores
    every run also on test images whose patches are put in a random order, which needs the trained
    network (a reused run counts only where its checkpoint is on this machine)."""

    question: str
    variants: dict[str, dict[str, Any]]
    comparisons: tuple[tuple[str, str], ...]
    budget: dict[str, Any] = field(default_factory=dict)
    extra_costs: dict[str, Callable[[], Any]] = field(default_factory=dict)
    shuffled_patches: bool = False
    speeds_beside_logs: bool = False  # its tables set the benchmark's training speed beside the runs' logs


# patch 2 (one token per 2x2 pixels of the 28x28 digit, or per pixel of the digit upsampled to
# 56x56), mean pooling (the window and pooled-key variants need the tokens to be exactly the grid),
# and the conv stem, which gives usable tokens within the short budget these token counts allow
_EFFICIENT = {"patch_size": 2, "pool": "mean", "stem": "conv"}
# the canvas suite's kinds, full attention first (the others' reference); windows and the dilated
# grid both hold 7 x 7 tokens of the 28 x 28 grid, pooled keys are averaged over 2 x 2
_CANVAS_KINDS = ("full", "window", "grid", "linear", "kvpool")
# The shipped recipe's first stage (the "base" preset), its model fields flattened as a variant's
# are; over the distill suite's 500 steps the weights' average keeps a ~100-step horizon, as the
# preset's 0.999 keeps ~1,000 of its 9,500.
_RECIPE: dict[str, Any] = {
    **{k: v for k, v in PRESETS["base"].items() if k not in ("model", "epochs", "ema_decay")},
    "drop_path": PRESETS["base"]["model"].drop_path,
    "stem": PRESETS["base"]["model"].stem,
    "augment": AugmentConfig(),
    "ema_decay": 0.99,
}
SUITES: dict[str, Suite] = {
    "tokens": Suite(
        "How do patch size and token count drive cost and accuracy?",
        {f"patch{p}": {"patch_size": p} for p in (2, 4, 7, 14)},
        (("patch2", "patch4"), ("patch7", "patch4"), ("patch14", "patch7")),
        # attention alone, fused against explicit softmax, at growing token counts
        extra_costs={"attention_cost": attention_cost},
    ),
    "posenc": Suite(
        "What does the positional encoding do?",
        {name: {"pos_embed": name} for name in ("learned", "sincos2d", "none")},
        (("sincos2d", "learned"), ("none", "learned")),
        # what a network makes of the pieces without their layout shows what the position code does
        shuffled_patches=True,
    ),
    "pooling": Suite(
        "Class token or mean pooling?",
        {"cls-token": {"pool": "cls"}, "mean-pool": {"pool": "mean"}},
        (("mean-pool", "cls-token"),),
    ),
    "timm": Suite(
        "Our ViT against timm's; grayscale against replicated RGB, with the stem's step controlled",
        {
            "ours-1ch": {},
            "timm-1ch": {"impl": "timm"},
            "ours-3ch": {"in_chans": 3},
            "timm-3ch": {"impl": "timm", "in_chans": 3},
            # replicating the grey channel 3 times triples the effective step of the patch
            # embedding under AdamW; these two give the other input the same step
            "ours-1ch-stem3x": {"stem_lr_scale": 3.0},
            "ours-3ch-stem1/3": {"in_chans": 3, "stem_lr_scale": 1 / 3},
            "timm-1ch-stem3x": {"impl": "timm", "stem_lr_scale": 3.0},
        },
        (
            ("timm-1ch", "ours-1ch"),
            ("ours-3ch", "ours-1ch"),
            ("timm-3ch", "timm-1ch"),
            ("ours-3ch", "ours-1ch-stem3x"),
            ("ours-3ch-stem1/3", "ours-1ch"),
            ("ours-1ch-stem3x", "ours-1ch"),
            ("timm-1ch-stem3x", "timm-1ch"),
            ("timm-3ch", "timm-1ch-stem3x"),
        ),
        # what the ImageNet-pretrained route would cost, against the shipped architecture
        extra_costs={"pretrained_route": pretrained_route_cost},
    ),
    "size": Suite(
        "Width, depth and heads around the base",
        {
            "d64-l6-h4": {},
            "d32-l6-h4": {"dim": 32},
            "d128-l6-h4": {"dim": 128},
            "d64-l2-h4": {"depth": 2},
            "d64-l12-h4": {"depth": 12},
            "d64-l6-h1": {"heads": 1},
            "d64-l6-h8": {"heads": 8},
        },
        (
            ("d32-l6-h4", "d64-l6-h4"),
            ("d128-l6-h4", "d64-l6-h4"),
            ("d64-l2-h4", "d64-l6-h4"),
            ("d64-l12-h4", "d64-l6-h4"),
            ("d64-l6-h1", "d64-l6-h4"),
            ("d64-l6-h8", "d64-l6-h4"),
        ),
    ),
    "stem": Suite(
        "Linear patch embedding or a convolutional stem?",
        {"linear": {"stem": "linear"}, "conv": {"stem": "conv"}},
        (("conv", "linear"),),
    ),
    "distill": Suite(
        "What does distillation from a CNN teacher buy the ViT: hard or soft labels, a distillation token, or none?",
        {
            "none": _RECIPE,
            "soft": _RECIPE | {"distill": "soft"},
            "hard": _RECIPE | {"distill": "hard"},
            "token": _RECIPE | {"distill": "token", "distill_token": True},
        },
        (("hard", "none"), ("soft", "none"), ("hard", "soft"), ("token", "hard"), ("token", "soft")),
        # the shipped recipe's first stage at a budget that fits three seeds of four variants in
        # under half an hour: 8 epochs on 8,000 images (2,000 more for validation), each seed with
        # a teacher of its own trained on the same images (variant_config, runs.train_suite)
        budget={"epochs": 8, "limit": 10000},
    ),
    "efficient": Suite(
        "Full attention against local-window, linear and key/value-pooling attention, at 196 and 784 tokens",
        {
            f"{kind}-{tokens}": _EFFICIENT | {"image_size": size, "attention": kind}
            for size, tokens in ((28, 196), (56, 784))
            for kind in ("full", "window", "linear", "kvpool")
        },
        tuple((f"{kind}-{n}", f"full-{n}") for n in (196, 784) for kind in ("window", "linear", "kvpool"))
        # and the kind that learns fastest against the other two
        + tuple((f"window-{n}", f"{kind}-{n}") for n in (196, 784) for kind in ("linear", "kvpool")),
        # full attention over 784 tokens trains at about a dozen images/s on this CPU: the suite
        # trains every variant for 2 epochs on 8,000 images (2,000 more for validation) in batches
        # of 32 (500 steps), and tests on 3,333 test images drawn at random
        budget={"epochs": 2, "limit": 10000, "batch_size": 32},
        # the speed-ups are the question here, and the runs' own logs are a second measurement of them
        speeds_beside_logs=True,
    ),
    "canvas": Suite(
        "Full, local-window, dilated-grid, linear and pooled-key attention over 784 tokens that all may "
        "hold the digit: each 28x28 digit at a random place on a 56x56 canvas, one token per 2x2 pixels",
        {kind: _EFFICIENT | {"image_size": 56, "canvas": 56, "attention": kind} for kind in _CANVAS_KINDS},
        (*((kind, "full") for kind in _CANVAS_KINDS[1:]), ("grid", "window")),
        # a budget for a GPU: full attention over 784 tokens trains at 16-18 images/s on these 2
        # cores, so its run of 10 epochs would take about 10 hours here, the others' 3.5-5 each
        budget={"epochs": 10, "batch_size": 128},
        speeds_beside_logs=True,
    ),
}
# The base every suite varies: the default recipe (TrainConfig's defaults, `--preset default`) with
# the changes the comparisons need, and only those:
# - the linear patch embedding, the plain ViT of the coursework: the conv stem needs a power-of-two
#   patch and timm's ViT has no conv stem, so only a linear one lets the tokens suite's patch sizes
#   7 and 14 and the timm suite compare with the rest;
# - 2 epochs, a short fixed budget: every variant trains once per seed, three seeds by default;
# - no augmentation: random affine pays off only over long schedules, and early on it slows every
#   variant down;
# - no ONNX export: the suites score the PyTorch checkpoint, and a serving artifact per run would
#   cost time and disk for nothing.
# Every other field is the default recipe's. The run records under docs/results/ hold each run's
# whole config; tests/training/test_experiments.py checks that every committed record is still its
# variant's config, so a change to a default that would change an experiment fails there.
BASE = dataclasses.replace(
    TrainConfig(),
    model=TrainConfig().model.replace(stem="linear"),
    epochs=2,
    augment=AugmentConfig.off(),
    export=False,
)


def run_name(variant: str, seed: int) -> str:
    """The run of ``variant`` at ``seed``: its folder in the suite's ``runs/`` and its config's name."""
    return f"{variant.replace('/', '_')}-seed{seed}"


def teacher_path(run_dir: Path, seed: int) -> Path:
    """The CNN teacher of a suite's runs at ``seed`` (``run_dir``: the suite's ``runs/``), trained
    on their training images when a run needs it (:func:`training.runs.train_suite`)."""
    return run_dir.parent / "teachers" / f"teacher-seed{seed}.safetensors"


def variant_config(base: TrainConfig, variant: str, overrides: dict[str, Any], seed: int) -> TrainConfig:
    """The training config of one run: the model overrides go to the model, the rest to training.
    A distilled variant's teacher is the seed's own, in the suite's folder: :func:`teacher_path`."""
    model = {k: v for k, v in overrides.items() if k in _MODEL_FIELDS}
    training = {k: v for k, v in overrides.items() if k not in _MODEL_FIELDS}
    if training.get("distill", "none") != "none":
        training.setdefault("teacher", teacher_path(base.run_dir, seed))
    return dataclasses.replace(
        base, name=run_name(variant, seed), seed=seed, model=base.model.replace(**model), **training
    )


def measure_costs(suite: Suite, base: TrainConfig) -> dict[str, Any]:
    """Parameters, FLOPs, activation memory and interleaved speeds of every variant, on fresh models,
    then the suite's extra measurements."""
    torch.manual_seed(0)
    models = {v: build_model(variant_config(base, v, o, 0).model) for v, o in suite.variants.items()}
    costs: dict[str, Any] = {
        v: {
            "tokens": m_cfg.num_patches + m_cfg.num_prefix_tokens,
            "parameters": count_parameters(m),
            "mflops_per_image": round(flops_per_image(m) / 1e6, 2),
            "activation_mb_per_128": round(activation_bytes(m) / 2**20, 2),
            "step_peak_mb_per_64": round(step_peak_bytes(m_cfg, 64) / 2**20, 1),
        }
        for v, m in models.items()
        for m_cfg in [variant_config(base, v, suite.variants[v], 0).model]
    }
    # training speed at the batch the suite trains with, so that it can be read beside the runs' logs
    train_batch = int(suite.budget.get("batch_size", base.batch_size))
    log.info("measuring speeds of %d variants in interleaved rounds (training batch %d)", len(models), train_batch)
    for v, speeds in interleaved_speeds(models, train_batch=train_batch).items():
        costs[v] |= speeds
    extra: dict[str, Any] = {
        "measured": time.strftime("%Y-%m-%d %H:%M"),
        "threads": torch.get_num_threads(),
        "train_batch": train_batch,
    }
    for name, measure in suite.extra_costs.items():
        extra[name] = measure()
    return {"variants": costs} | extra
