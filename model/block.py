"""The pre-norm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

from __future__ import annotations

import torch
from torch import nn

from model.attention import Attention


class DropPath(nn.Module):
    """Stochastic depth: drops a residual branch for whole samples while training."""

    def __init__(self, rate: float = 0.0):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    """Two linear layers with GELU between them."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer encoder block.

    Args:
        dim: token width.
        heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        dropout: dropout in the MLP and after the attention projection.
        attn_dropout: dropout on attention probabilities (of the default full attention).
        drop_path: stochastic-depth rate of both residual branches.
        attention: the attention module (:mod:`model.efficient_attention`); full multi-head
            attention (:class:`~model.attention.Attention`) if None.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path: float = 0.0,
        attention: nn.Module | None = None,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        if attention is None:
            attention = Attention(dim, heads, attn_dropout=attn_dropout, proj_dropout=dropout)
        self.attn = attention
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout=dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, N, dim) -> (B, N, dim), plus this block's (B, heads, N, N) attention if asked."""
        y, attn = self.attn(self.norm1(x), return_attention=return_attention)
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, attn
