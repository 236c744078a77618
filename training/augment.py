"""Batched random affine augmentation (rotation, shift, zoom, shear) with one grid_sample."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from training.config import AugmentConfig


def random_affine(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply an independent random affine transform to each image of ``x`` (B, C, H, W).

    Done for the whole batch at once on the batch's device: per-sample PIL transforms in
    DataLoader workers would take the very CPU cores the model trains on. Pixels moved in from
    outside the image take the value of the background (the batch minimum, MNIST's black).
    """
    B = x.shape[0]

    def uniform(bound: float) -> torch.Tensor:
        return (torch.rand(B, generator=generator) * 2 - 1) * bound

    angle = uniform(math.radians(cfg.rotate))
    shear = uniform(math.radians(cfg.shear))
    zoom = 1 + uniform(cfg.scale)
    shift = torch.stack([uniform(cfg.translate * 2), uniform(cfg.translate * 2)], dim=1)  # in [-1, 1] units
    cos, sin, tan = angle.cos(), angle.sin(), shear.tan()
    # inverse map (output -> input coordinates): rotation, then shear along x, divided by zoom
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0] = cos / zoom
    theta[:, 0, 1] = (-sin + cos * tan) / zoom
    theta[:, 1, 0] = sin / zoom
    theta[:, 1, 1] = (cos + sin * tan) / zoom
    theta[:, :, 2] = shift
    theta = theta.to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    background = x.amin()
    out = F.grid_sample(x - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + background
