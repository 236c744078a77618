"""The training run: data, model, AdamW with warmup + cosine, EMA, validation, checkpoints."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import ConfigError
from model.device import resolve_device
from model.factory import build_model, count_parameters
from model.meta import CheckpointMeta, Preprocessing
from training.config import TrainConfig
from training.data import (
    CANVAS_TEST_SEED,
    MEAN,
    STD,
    Split,
    dataset_checksum,
    load_split,
    on_canvas,
    prepare_root,
    train_val_split,
)
from training.distributed import DistInfo, barrier, init_distributed, shutdown
from training.ema import ModelEma
from training.engine import EpochOptions, EpochStats, accuracy, predict, score, train_one_epoch
from training.export import export_next_to
from training.pictures import (
    FIT_STAGINGS,
    TRAIN_KINDS,
    Picture,
    non_digits,
    picture_set,
    staged_digits,
    typed_digit_pictures,
)
from training.state import ResumeState, load_state, save_state
from training.teacher import Distiller, load_teacher

log = logging.getLogger(__name__)
DRY_RUN_STEPS = 3


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: mixed precision on CUDA only (bf16 where supported, else fp16)."""
    if device.type != "cuda" or amp == "none":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def load_data(cfg: TrainConfig) -> tuple[Split, Split, Split, str]:
    """Train, validation and test splits (limited if asked) and the dataset checksum; the training
    split also holds ``cfg.typed_digits`` typed digits and ``cfg.staged_digits`` staged ones."""
    root = prepare_root(cfg.data_dir, download=cfg.download)
    train, test = load_split(root, train=True), load_split(root, train=False)
    if cfg.canvas:  # the whole test split, so that a picture's position never depends on --limit
        test = on_canvas(test, cfg.canvas, CANVAS_TEST_SEED)
    if cfg.limit:
        train = train.subset(torch.arange(min(cfg.limit, len(train))))
        test = test.subset(torch.arange(min(max(cfg.limit // 5, 1), len(test))))
    val_size = min(cfg.val_size, len(train) // 5) if cfg.limit else cfg.val_size
    train, val = train_val_split(train, val_size, cfg.seed)
    extra = []
    if cfg.typed_digits:
        extra.append(picture_set("typed", typed_digit_pictures, cfg.typed_digits, cfg.seed))
    if cfg.staged_digits:
        digits = train  # staged from the training split only: the validation digits stay unseen

        def stage(count: int, seed: int) -> list[Picture]:
            images, labels = digits.images[:count].numpy(), digits.labels[:count].numpy()
            return staged_digits(images, labels, seed, stagings=FIT_STAGINGS)

        name = f"staged-train-val{len(val)}-limit{cfg.limit}"
        extra.append(picture_set(name, stage, min(cfg.staged_digits, len(train)), cfg.seed))
    for pictures in extra:
        train = Split(
            torch.cat([train.images, torch.from_numpy(pictures.images)]),
            torch.cat([train.labels, torch.from_numpy(pictures.labels).long()]),
        )
    if cfg.canvas:
        train, val = on_canvas(train, cfg.canvas, cfg.seed), on_canvas(val, cfg.canvas, cfg.seed + 1)
    return train, val, test, dataset_checksum(root)


def load_outliers(cfg: TrainConfig) -> torch.Tensor | None:
    """The outlier-exposure pictures (training kinds only), or None when it is off."""
    if not cfg.outlier_weight:
        return None
    pictures = picture_set(
        "outliers", lambda n, seed: non_digits(TRAIN_KINDS, n, seed), cfg.outliers_per_kind, cfg.seed
    )
    log.info("outlier exposure: %d pictures of %s, weight %g", len(pictures.images), TRAIN_KINDS, cfg.outlier_weight)
    return torch.from_numpy(pictures.images)


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to ``lr``, then cosine decay to ``min_lr``, stepped per batch."""
    total = max(cfg.epochs * steps_per_epoch, 1)
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
    floor = cfg.min_lr / cfg.lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def run(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train as configured; returns the summary stored in the best checkpoint."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    dist_info = init_distributed(device)
    if device.type == "cuda" and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)
    try:
        return _run(cfg, device, dist_info, resume)
    finally:
        shutdown(dist_info)


@dataclass
class _Session:
    """The objects one training run works with."""

    cfg: TrainConfig
    device: torch.device
    dist: DistInfo
    model: nn.Module
    trained: nn.Module  # the model, or its DistributedDataParallel wrapper
    ema: ModelEma | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    generator: torch.Generator
    per_rank_batch: int
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    outliers: torch.Tensor | None = None
    distiller: Distiller | None = None

    @property
    def evaluated(self) -> nn.Module:
        """What validation scores and checkpoints hold: the EMA weights when there are any."""
        return self.ema.module if self.ema is not None else self.model

    def after_step(self) -> None:
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)


def _setup(cfg: TrainConfig, device: torch.device, dist_info: DistInfo, train_size: int) -> _Session:
    """Model, EMA, DDP wrapper, AdamW (no decay on biases, norms, tokens), schedule, mixed precision."""
    model = build_model(cfg.model).to(device)
    if cfg.init is not None:
        start = load_checkpoint(cfg.init)
        if start.meta.config != cfg.model:
            raise ConfigError(f"--init {cfg.init}: its model config differs from the run's ({start.meta.config})")
        model.load_state_dict(start.model.state_dict())
    per_rank_batch = max(cfg.batch_size // dist_info.world_size, 1)
    steps_per_epoch = math.ceil(train_size // dist_info.world_size / per_rank_batch)
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr)
    dtype = amp_dtype(cfg.amp, device)
    return _Session(
        cfg=cfg,
        device=device,
        dist=dist_info,
        model=model,
        trained=DistributedDataParallel(model) if dist_info.enabled else model,
        ema=ModelEma(model, cfg.ema_decay) if cfg.ema_decay else None,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, cfg, steps_per_epoch),
        generator=torch.Generator().manual_seed(cfg.seed),
        per_rank_batch=per_rank_batch,
        amp_dtype=dtype,
        scaler=torch.amp.GradScaler("cuda") if dtype == torch.float16 else None,
    )


def _resume(s: _Session, state_file: Path) -> ResumeState:
    if not state_file.is_file():
        raise FileNotFoundError(f"--resume: no saved state at {state_file}")
    ema = s.ema.module if s.ema is not None else None
    position = load_state(state_file, s.model, ema, s.optimizer, s.scheduler, s.generator)
    if s.ema is not None:
        s.ema.step = position.step
    log.info("resumed %s at epoch %d (best val %.4f)", s.cfg.run_path, position.epoch + 1, position.best_val)
    return position


def _train_epoch(s: _Session, train: Split, epoch: int) -> EpochStats:
    cfg = s.cfg
    desc = f"epoch {epoch + 1}/{cfg.epochs}"
    return train_one_epoch(s.trained, train, s.optimizer, s.after_step, s.generator, _epoch_options(s, train), desc)


def _epoch_options(s: _Session, train: Split) -> EpochOptions:
    """What every epoch of the run trains with: its config's constants and the session's objects."""
    cfg = s.cfg
    return EpochOptions(
        device=s.device,
        batch_size=s.per_rank_batch,
        augment=cfg.augment,
        label_smoothing=cfg.label_smoothing,
        grad_clip=cfg.grad_clip,
        amp_dtype=s.amp_dtype,
        scaler=s.scaler,
        max_steps=DRY_RUN_STEPS if cfg.dry_run else 0,
        rank=s.dist.rank,
        world=s.dist.world_size,
        outliers=s.outliers,
        outlier_weight=cfg.outlier_weight,
        distiller=s.distiller,
        # about 25 points per epoch on the training curve, at most one per 50 steps
        curve_every=max(1, min(50, len(train) // s.dist.world_size // s.per_rank_batch // 25)),
    )


def _run(cfg: TrainConfig, device: torch.device, dist_info: DistInfo, resume: bool) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    train, val, test, checksum = load_data(cfg)
    s = _setup(cfg, device, dist_info, len(train))
    s.outliers = load_outliers(cfg)
    if cfg.distill != "none":
        assert cfg.teacher is not None  # TrainConfig checks it
        teacher = load_teacher(cfg.teacher).to(device)
        s.distiller = Distiller(teacher, cfg.distill, cfg.distill_alpha, cfg.distill_tau)
    state_file = cfg.run_path / "last.state.safetensors"
    position = _resume(s, state_file) if resume else ResumeState(0, 0, -1.0, cfg.to_dict())
    if dist_info.is_main:
        cfg.run_path.mkdir(parents=True, exist_ok=True)
        (cfg.run_path / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        log.info(
            "training %s: %d params, %d train / %d val / %d test images, device %s, %d process(es)",
            cfg.name,
            count_parameters(s.model),
            len(train),
            len(val),
            len(test),
            device,
            dist_info.world_size,
        )
    started = time.perf_counter()
    for epoch in range(position.epoch, cfg.epochs):
        stats = _train_epoch(s, train, epoch)
        val_acc, val_loss = score(predict(s.evaluated, val, device), val.labels)
        steps_before = position.step
        position.epoch, position.step = epoch + 1, position.step + stats.steps
        record = {
            "epoch": epoch + 1,
            "train_loss": round(stats.loss, 5),
            "train_acc": round(stats.accuracy, 5),
            "val_acc": round(val_acc, 5),
            "val_loss": round(val_loss, 5),
            "lr": s.scheduler.get_last_lr()[0],
            "images_per_s": round(stats.images_per_s * dist_info.world_size, 1),
            "epoch_s": round(stats.seconds, 2),
            "elapsed_s": round(time.perf_counter() - started, 2),
            # (global step, mean training loss of the steps since the previous point)
            "train_curve": [[steps_before + step, loss] for step, loss in stats.curve],
        }
        if dist_info.is_main:
            _end_epoch(s, position, record, checksum, state_file)
        barrier(dist_info)
        if cfg.dry_run:
            break
    summary = (
        _finish(cfg, cfg.run_path / "best.safetensors", test, device, time.perf_counter() - started)
        if dist_info.is_main
        else {}
    )
    barrier(dist_info)
    return summary


def _end_epoch(s: _Session, position: ResumeState, record: dict[str, Any], checksum: str, state_file: Path) -> None:
    """Log the epoch, keep the best checkpoint by validation accuracy, save the resumable state."""
    log.info("epoch %d: %s", record["epoch"], json.dumps(record))
    with open(s.cfg.run_path / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")
    if record["val_acc"] > position.best_val:
        position.best_val = record["val_acc"]
        save_checkpoint(
            s.cfg.run_path / "best.safetensors", s.evaluated, _meta(s.cfg, checksum, record, count_parameters(s.model))
        )
    ema = s.ema.module if s.ema is not None else None
    save_state(state_file, s.model, ema, s.optimizer, s.scheduler, position, s.generator)


def _finish(cfg: TrainConfig, best_path: Path, test: Split, device: torch.device, seconds: float) -> dict[str, Any]:
    """Score the best checkpoint on the test set and record it (and the wall time) inside it."""
    loaded = load_checkpoint(best_path, device=device)
    test_acc = accuracy(loaded.model, test, device)
    training = dict(
        loaded.meta.training, test_accuracy=round(test_acc, 5), test_images=len(test), train_wall_s=round(seconds, 1)
    )
    meta = dataclasses.replace(loaded.meta, training=training)
    save_checkpoint(best_path, loaded.model, meta)
    if cfg.output is not None:
        cfg.output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best_path, cfg.output)
    if cfg.export:
        export_next_to(cfg.output or best_path)  # the serving artifact, next to the checkpoint
    log.info("test accuracy %.4f on %d images; best checkpoint %s", test_acc, len(test), cfg.output or best_path)
    return training


def _meta(cfg: TrainConfig, checksum: str, record: dict[str, Any], params: int) -> CheckpointMeta:
    channels = cfg.model.in_chans
    training = {
        "run": cfg.name,
        "epoch": record["epoch"],
        "epochs": cfg.epochs,
        "val_accuracy": record["val_acc"],
        "seed": cfg.seed,
        "limit": cfg.limit,
        "dataset_sha256": checksum,
        "parameters": params,
        "git_commit": _git_commit(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "recipe": cfg.to_dict(),
    }
    return CheckpointMeta(
        config=cfg.model, preprocess=Preprocessing(28, (MEAN,) * channels, (STD,) * channels), training=training
    )


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW's parameter groups: weight decay on matrices and conv kernels only (not on biases,
    norms, tokens, positions); with ``stem_lr_scale`` != 1, the patch-embedding kernel in a group
    of its own whose learning rate is scaled and whose decay is divided by the same factor, so
    that the decay per step (lr x decay) is unchanged."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    stem: list[nn.Parameter] = []  # the stem kernel, when its step is scaled
    stem_kernel = _stem_kernel(model) if cfg.stem_lr_scale != 1.0 else None
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if p is stem_kernel:
            stem.append(p)
        else:
            (decay if p.ndim >= 2 and p.shape[0] != 1 else no_decay).append(p)
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if stem:
        scale = cfg.stem_lr_scale
        groups.append({"params": stem, "weight_decay": cfg.weight_decay / scale, "lr": cfg.lr * scale})
    return groups


def _stem_kernel(model: nn.Module) -> torch.Tensor:
    """The kernel of the first convolution: the linear patch embedding's (ours and timm's)."""
    proj = getattr(getattr(model, "patch_embed", None), "proj", None)
    if not isinstance(proj, nn.Conv2d):
        raise ConfigError("stem_lr_scale needs the linear patch embedding (stem='linear')")
    return proj.weight


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def _versions() -> dict[str, str]:
    import safetensors

    versions = {"python": platform.python_version(), "torch": torch.__version__, "safetensors": safetensors.__version__}
    try:
        import timm

        versions["timm"] = timm.__version__
    except ImportError:
        pass
    return versions
