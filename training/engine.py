"""One training epoch and one evaluation pass, over in-memory uint8 MNIST tensors."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model.factory import match_channels
from training.augment import random_affine
from training.config import AugmentConfig
from training.data import Split, to_input

if TYPE_CHECKING:
    from training.teacher import Distiller


@dataclass(frozen=True)
class EpochStats:
    loss: float
    accuracy: float
    images: int
    seconds: float
    # the training curve: (step within the epoch, mean loss over the steps since the last point)
    curve: tuple[tuple[int, float], ...] = ()
    steps: int = 0  # optimiser steps taken (the last batch of an epoch may be short)

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def batches(
    n: int, batch_size: int, generator: torch.Generator | None, rank: int = 0, world: int = 1
) -> Iterator[torch.Tensor]:
    """Index batches over ``n`` items: shuffled if a generator is given, sharded across ranks.

    Every rank draws the same permutation and takes an equal, disjoint share of it, so all ranks
    run the same number of steps (DDP would hang otherwise).
    """
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    per_rank = n // world if world > 1 else n
    order = order[rank * per_rank : (rank + 1) * per_rank] if world > 1 else order
    for start in range(0, per_rank, batch_size):
        yield order[start : start + batch_size]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[None]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass(frozen=True)
class EpochOptions:
    """How a run trains every epoch: the constants of :func:`train_one_epoch`.

    ``batch_size`` is per process; ``rank`` and ``world`` shard the batches across processes.
    ``amp_dtype`` turns on autocast and ``scaler`` (fp16 only) scales the loss. ``max_steps`` > 0
    stops the epoch early (a dry run). With ``outliers`` (uint8 (M, 28, 28) not-a-digit pictures)
    and ``outlier_weight`` > 0, every batch also takes half its size in randomly drawn outliers,
    trained towards the uniform distribution over the classes (outlier exposure, Hendrycks et al.
    2019): the model learns to give what is not a digit flat, low logits. With a ``distiller`` the
    digits' loss mixes the labels with a teacher's answers on the same augmented batch (with the
    ``token`` kind, the class token's head takes the labels and the distillation token's the
    teacher). The curve holds the mean loss of every ``curve_every`` steps.
    """

    device: torch.device
    batch_size: int
    augment: AugmentConfig
    label_smoothing: float
    grad_clip: float  # max gradient norm; 0 disables
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    max_steps: int = 0
    rank: int = 0
    world: int = 1
    outliers: torch.Tensor | None = None
    outlier_weight: float = 0.0
    curve_every: int = 50
    distiller: Distiller | None = None


def train_one_epoch(
    model: nn.Module,
    data: Split,
    optimizer: torch.optim.Optimizer,
    step_hook: Callable[[], None],
    generator: torch.Generator,
    options: EpochOptions,
    desc: str = "train",
) -> EpochStats:
    """One pass over ``data``, shuffled by ``generator``, as ``options`` say; ``step_hook`` runs after
    every optimiser step (schedule, EMA). Loss and accuracy are reported on the digits (outliers
    aside); ``desc`` labels the progress bar."""
    o = options
    model.train()
    in_chans, size = input_shape(model)
    loss_sum, correct, seen, start = 0.0, 0, 0, time.perf_counter()
    curve: list[tuple[int, float]] = []
    window_sum, window_steps = 0.0, 0
    steps = (len(data) // o.world + o.batch_size - 1) // o.batch_size
    if o.max_steps:
        steps = min(steps, o.max_steps)
    taken = 0
    two_heads = o.distiller is not None and o.distiller.kind == "token"
    bar = tqdm(total=steps, desc=desc, disable=o.rank != 0, leave=False, dynamic_ncols=True)
    for step, index in enumerate(batches(len(data), o.batch_size, generator, o.rank, o.world)):
        if step == steps:
            break
        images = data.images[index]
        exposed = o.outliers is not None and o.outlier_weight > 0
        if exposed:
            assert o.outliers is not None
            drawn = torch.randint(len(o.outliers), (max(len(index) // 2, 1),), generator=generator)
            images = torch.cat([images, o.outliers[drawn]])
        x = to_input(images, o.device)
        y = data.labels[index].to(o.device, non_blocking=True)
        if o.augment.enabled:
            x = random_affine(x, o.augment, generator)
        with autocast(o.device, o.amp_dtype):
            # the class token's head learns from the labels, the distillation token's (where it is
            # the distiller's kind) from the teacher; without one both are the same logits
            if two_heads:
                heads = model(fit_input(x, in_chans, size), both_heads=True)
            else:
                heads = (model(fit_input(x, in_chans, size)),) * 2
            logits = (heads[0][: len(y)] + heads[1][: len(y)]) / 2 if two_heads else heads[0][: len(y)]
            loss = F.cross_entropy(heads[0][: len(y)], y, label_smoothing=o.label_smoothing)
            if o.distiller is not None:
                loss = o.distiller.loss(x[: len(y)], heads[1][: len(y)], loss)
            if exposed:
                uniform = [-F.log_softmax(h[len(y) :].float(), dim=1).mean() for h in heads]
                loss = loss + o.outlier_weight * (uniform[0] + uniform[1]) / 2
        optimizer.zero_grad(set_to_none=True)
        if o.scaler is not None:
            o.scaler.scale(loss).backward()
            o.scaler.unscale_(optimizer)
        else:
            loss.backward()
        if o.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        if o.scaler is not None:
            o.scaler.step(optimizer)
            o.scaler.update()
        else:
            optimizer.step()
        step_hook()
        taken = step + 1
        loss_sum += loss.item() * len(y)
        window_sum, window_steps = window_sum + loss.item(), window_steps + 1
        if window_steps == o.curve_every:
            curve.append((taken, round(window_sum / window_steps, 5)))
            window_sum, window_steps = 0.0, 0
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
        elapsed = time.perf_counter() - start
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", img_s=f"{seen / elapsed:.0f}")
        bar.update()
    bar.close()
    if window_steps:  # the loop may have stopped at max_steps, where ``step`` is one past the last step taken
        curve.append((taken, round(window_sum / window_steps, 5)))
    seconds = time.perf_counter() - start
    return EpochStats(loss_sum / max(seen, 1), correct / max(seen, 1), seen, seconds, tuple(curve), taken)


@torch.no_grad()
def predict(
    model: nn.Module, data: Split, device: torch.device, batch_size: int = 1000, desc: str = "eval"
) -> torch.Tensor:
    """Logits (N, classes) for every image of ``data``, in order, in eval mode."""
    model.eval()
    in_chans, size = input_shape(model)
    outputs = []
    for index in tqdm(list(batches(len(data), batch_size, None)), desc=desc, leave=False, disable=len(data) < 5000):
        x = fit_input(to_input(data.images[index], device), in_chans, size)
        outputs.append(model(x).float().cpu())
    return torch.cat(outputs) if outputs else torch.empty(0, 10)


def accuracy(model: nn.Module, data: Split, device: torch.device) -> float:
    """Top-1 accuracy of ``model`` on ``data``."""
    return score(predict(model, data, device), data.labels)[0]


def score(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy of ``logits`` against ``labels``."""
    if not len(labels):
        return 0.0, 0.0
    return float((logits.argmax(1) == labels).float().mean()), float(F.cross_entropy(logits.float(), labels))


def input_shape(model: nn.Module) -> tuple[int, int]:
    """Input channels and image side of our ViT or timm's (DDP-wrapped or not)."""
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    config = getattr(inner, "config", None)
    if config is not None and hasattr(config, "image_size"):
        return int(first.in_channels), int(config.image_size)
    size = getattr(getattr(inner, "patch_embed", None), "img_size", None)  # timm: (H, W)
    return int(first.in_channels), int(size[0]) if size is not None else 28


def fit_input(x: torch.Tensor, in_chans: int, size: int) -> torch.Tensor:
    """A normalised 28x28 grayscale batch as the model takes it: replicated to ``in_chans`` channels
    and, for a model built for another image size, resized (bilinear) to ``size`` x ``size``."""
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return match_channels(x, in_chans)
