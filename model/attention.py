"""Multi-head self-attention with a fused path and an explicit path that returns its maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class QKVAttention(nn.Module):
    """What every attention kind shares (full here, the others in ``model/efficient_attention.py``):
    the fused qkv projection, the output projection and the two dropouts."""

    def __init__(self, dim: int, heads: int, attn_dropout: float = 0.0, proj_dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.attn_drop = nn.Dropout(attn_dropout)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_dropout)

    def _dropout_p(self) -> float:
        """The attention dropout rate to pass to SDPA: zero outside training."""
        return self.attn_drop.p if self.training else 0.0

    def _no_maps(self, return_attention: bool) -> None:
        if return_attention:
            raise ValueError(f"{type(self).__name__} has no attention maps; they need attention='full'")


class Attention(QKVAttention):
    """Multi-head self-attention.

    Without maps it calls ``scaled_dot_product_attention`` (fused kernels, no (N, N) tensor kept).
    With ``return_attention=True`` it computes the softmax explicitly, through ``self.softmax`` so a
    forward hook can also record it, and returns the probabilities. Both paths give the same output.

    Args:
        dim: token width.
        heads: number of heads; must divide ``dim``.
        attn_dropout: dropout on the attention probabilities (training only).
        proj_dropout: dropout after the output projection.
    """

    def __init__(self, dim: int, heads: int, attn_dropout: float = 0.0, proj_dropout: float = 0.0):
        super().__init__(dim, heads, attn_dropout, proj_dropout)
        self.scale = self.head_dim**-0.5
        self.softmax = nn.Softmax(dim=-1)  # a module, so hooks can record attention

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend over ``x`` (B, N, C); returns the output and, if asked, (B, heads, N, N) maps."""
        B, N, C = x.shape
        # (B, N, 3C) -> (3, B, heads, N, head_dim)
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn: torch.Tensor | None = None
        if return_attention:
            # (B, h, N, d) x (B, h, d, N) -> (B, h, N, N); softmax over keys, the last axis
            attn = self.softmax((q * self.scale) @ k.transpose(-2, -1))
            out = self.attn_drop(attn) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=self._dropout_p())
        out = out.transpose(1, 2).reshape(B, N, C)  # (B, h, N, d) -> (B, N, C)
        return self.proj_drop(self.proj(out)), attn
