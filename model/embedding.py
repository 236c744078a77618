"""Patch embeddings (linear or convolutional stem) and positional embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """Linear patch embedding: one conv with kernel = stride = patch size.

    Equivalent to flattening each patch and applying a shared linear layer.
    """

    def __init__(self, in_chans: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, dim) with N = (H / patch) * (W / patch)."""
        return self.proj(x).flatten(2).transpose(1, 2)


class ConvStem(nn.Module):
    """Convolutional stem (Xiao et al. 2021, "Early convolutions help transformers see better").

    A 3x3 conv at full resolution, then one 3x3 stride-2 conv per halving until the grid equals the
    patch grid, then a 1x1 projection to ``dim``. It replaces the single large-stride conv, whose
    abrupt patchify makes optimisation harder, at a small extra cost.
    """

    def __init__(self, in_chans: int, dim: int, patch_size: int):
        super().__init__()
        halvings = int(math.log2(patch_size))
        width = max(dim // 2**halvings, 8)
        layers: list[nn.Module] = [*_conv_bn_act(in_chans, width, stride=1)]
        for _ in range(halvings):
            layers += _conv_bn_act(width, min(width * 2, dim), stride=2)
            width = min(width * 2, dim)
        layers.append(nn.Conv2d(width, dim, kernel_size=1))
        self.proj = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, dim)."""
        return self.proj(x).flatten(2).transpose(1, 2)


def _conv_bn_act(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.GELU(),
    ]


def sincos_2d(grid_size: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding, (grid_size^2, dim), rows in raster order.

    A quarter of the channels each for sin(y), cos(y), sin(x), cos(x) at geometric frequencies.
    """
    if dim % 4:
        raise ValueError(f"sincos2d position embedding needs dim divisible by 4; got {dim}")
    y, x = torch.meshgrid(
        torch.arange(grid_size, dtype=torch.float32),
        torch.arange(grid_size, dtype=torch.float32),
        indexing="ij",
    )
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4 - 1 or 1))
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], dim=1)
