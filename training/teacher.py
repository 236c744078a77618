"""A small CNN teacher, and knowledge distillation from it into the ViT.

A convolutional network reaches a higher MNIST accuracy in minutes on a CPU than the ViT does in
the better part of an hour: its locality and weight sharing are the right prior for 28x28 strokes.
The ViT keeps serving (attention maps, the export, every measurement of the service); what it
takes from the teacher is the teacher's answers on the very batches it trains on (DeiT, Touvron et
al. 2021):

- ``soft``: the KL divergence between the teacher's and the student's distributions at a
  temperature ``tau`` (Hinton et al. 2015), mixed with the cross-entropy against the labels;
- ``hard``: the cross-entropy against the teacher's top class, mixed half and half with the
  cross-entropy against the labels (DeiT's hard-label distillation), both through the class
  token's head;
- ``token``: the same two terms on two heads: the labels' on the class token's, the teacher's top
  class on a distillation token's (DeiT's distillation token, ``ViTConfig.distill_token``); the
  served logits are the mean of the two.

Outlier exposure is untouched: the teacher never saw a non-digit, so non-digits keep their uniform
target.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from training.augment import random_affine
from training.config import AugmentConfig
from training.data import Split, to_input
from training.engine import batches, score

log = logging.getLogger(__name__)
Distill = Literal["none", "soft", "hard", "token"]
CHANNELS = (24, 24, 48, 48, 80, 80)  # six 3x3 convolutions, 2x2 max-pooling after the 2nd and 4th


class ConvTeacher(nn.Module):
    """Six 3x3 convolutions with batch norm (28 -> 14 -> 7 pixels), global average pooling, a
    linear head: about 130k parameters. Channels-last: on CPU its training step and its forward
    pass (what distillation adds to every student step) take 0.84x and 0.6x the time."""

    def __init__(self, channels: tuple[int, ...] = CHANNELS, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        previous = 1
        for i, width in enumerate(channels):
            layers += [nn.Conv2d(previous, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            if i in (1, 3):
                layers.append(nn.MaxPool2d(2))
            previous = width
        self.features = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        self.head = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) normalised -> (B, classes) logits."""
        x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.features(x).mean(dim=(2, 3)))


@dataclass(frozen=True)
class TeacherConfig:
    """The teacher's recipe: AdamW with a one-cycle schedule, the student's random affine augmentation."""

    epochs: int = 6
    batch_size: int = 128
    lr: float = 3e-3  # the one-cycle schedule's peak
    weight_decay: float = 5e-4
    seed: int = 0


def train_teacher(train: Split, val: Split, cfg: TeacherConfig, augment: AugmentConfig, path: Path) -> ConvTeacher:
    """Train the teacher on ``train`` (digits only), save its weights to ``path`` and return it in
    eval mode; logs the validation accuracy of every epoch."""
    torch.manual_seed(cfg.seed)
    model = ConvTeacher()
    generator = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    device = torch.device("cpu")
    for epoch in range(cfg.epochs):
        model.train()
        started = time.perf_counter()
        for index in batches(len(train), cfg.batch_size, generator):
            x = to_input(train.images[index], device)
            if augment.enabled:
                x = random_affine(x, augment, generator)
            loss = F.cross_entropy(model(x), train.labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        val_acc, _ = score(teacher_logits(model, val), val.labels)
        log.info(
            "teacher epoch %d/%d: val %.4f (%.0f s)", epoch + 1, cfg.epochs, val_acc, time.perf_counter() - started
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: t.contiguous() for name, t in model.state_dict().items()}, str(path))
    return model.eval()


def load_teacher(path: Path) -> ConvTeacher:
    """The teacher saved by :func:`train_teacher`, in eval mode."""
    model = ConvTeacher()
    model.load_state_dict(load_file(str(path)))
    return model.eval()


@torch.no_grad()
def teacher_logits(model: nn.Module, data: Split, batch_size: int = 1000) -> torch.Tensor:
    """The teacher's logits for every image of ``data``, in order."""
    model.eval()
    out = [model(to_input(data.images[i], torch.device("cpu"))) for i in batches(len(data), batch_size, None)]
    return torch.cat(out) if out else torch.empty(0, 10)


@dataclass(frozen=True)
class Distiller:
    """The distillation term of the student's loss on a batch of digits."""

    teacher: nn.Module
    kind: Distill = "hard"
    alpha: float = 0.5  # the teacher's share of the loss; the labels' is 1 - alpha
    tau: float = 2.0  # the soft kind's temperature

    def loss(self, x: torch.Tensor, student: torch.Tensor, labels_loss: torch.Tensor) -> torch.Tensor:
        """``labels_loss`` (the cross-entropy against the labels) mixed with the teacher's term for
        the student's logits ``student`` on the (augmented, normalised) digits ``x`` (with the
        ``token`` kind, the distillation token's logits)."""
        with torch.no_grad():
            target = self.teacher(x[:, :1]).float()  # the teacher reads one channel
        if self.kind in ("hard", "token"):
            term = F.cross_entropy(student, target.argmax(dim=1))
        else:
            term = F.kl_div(
                F.log_softmax(student.float() / self.tau, dim=1),
                F.log_softmax(target / self.tau, dim=1),
                reduction="batchmean",
                log_target=True,
            ) * (self.tau**2)
        return (1 - self.alpha) * labels_loss + self.alpha * term
