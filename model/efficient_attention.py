"""Attention that avoids the full (N, N) softmax over all tokens: local windows, a dilated grid,
linear, pooled keys.

Each kind has the parameters of :class:`~model.attention.Attention` under the same names (``qkv``,
``proj``), so a model changes kind without changing its parameter count, and weights copy across.
They attend over the patch grid in row-major order (no class token; :class:`~model.config.ViTConfig`
enforces ``pool='mean'``) and return no attention maps: there is no (N, N) matrix to return.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from model.attention import Attention, QKVAttention
from model.config import ViTConfig


class WindowAttention(QKVAttention):
    """Multi-head attention inside non-overlapping ``window`` x ``window`` windows of the patch grid
    (Swin, Liu et al. 2021): cost O(N * window^2 * d) instead of O(N^2 * d).

    A shifted block rolls the grid by ``window // 2`` before partitioning, so that its windows
    straddle the previous block's borders and information crosses windows. The roll brings tokens
    from opposite image borders into one window; a mask keeps them from attending to each other
    (each token attends only to tokens of its own region of the unrolled image). With a single
    window covering the grid there is nothing to shift and the block is full attention.

    Args:
        dim: token width.
        heads: number of heads; must divide ``dim``.
        grid: patches per side; the input has grid^2 tokens.
        window: window side in patches; must divide ``grid``.
        shifted: roll the grid by ``window // 2`` (Swin's odd blocks).
        attn_dropout: dropout on the attention probabilities (training only).
        proj_dropout: dropout after the output projection.
    """

    mask: torch.Tensor | None  # (windows, 1, window^2, window^2), True where attention is allowed

    def __init__(
        self,
        dim: int,
        heads: int,
        grid: int,
        window: int,
        shifted: bool = False,
        attn_dropout: float = 0.0,
        proj_dropout: float = 0.0,
    ):
        super().__init__(dim, heads, attn_dropout, proj_dropout)
        if grid % window:
            raise ValueError(f"window ({window}) must divide the grid ({grid})")
        self.grid = grid
        self.window = window
        self.shift = window // 2 if shifted and window < grid else 0
        # not persistent: derived from the config, so the state dict stays that of full attention
        mask = _shifted_window_mask(grid, window, self.shift) if self.shift else None
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> tuple[torch.Tensor, None]:
        """Attend over ``x`` (B, grid^2, C) within windows; returns the output and None (no maps)."""
        self._no_maps(return_attention)
        B, N, C = x.shape
        g, w, s = self.grid, self.window, self.shift
        n = g // w  # windows per side
        qkv = self.qkv(x).reshape(B, g, g, 3 * C)  # per-token projection, so rolling after it is the same
        if s:
            qkv = torch.roll(qkv, shifts=(-s, -s), dims=(1, 2))
        # (B, g, g, 3C) -> (B, n, w, n, w, 3C) -> (B, n, n, w, w, 3C) -> (B * n^2, w^2, 3, heads, d)
        qkv = qkv.reshape(B, n, w, n, w, 3 * C).permute(0, 1, 3, 2, 4, 5)
        qkv = qkv.reshape(B * n * n, w * w, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B * n^2, heads, w^2, d)
        mask = None
        if self.mask is not None:
            # (n^2, 1, w^2, w^2) -> (B * n^2, 1, w^2, w^2), windows of one image contiguous as in q
            mask = self.mask.expand(B, -1, -1, -1, -1).reshape(B * n * n, 1, w * w, w * w)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self._dropout_p())
        # (B * n^2, heads, w^2, d) -> (B, n, n, w, w, C) -> (B, n, w, n, w, C) -> (B, g, g, C)
        out = out.transpose(1, 2).reshape(B, n, n, w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(B, g, g, C)
        if s:
            out = torch.roll(out, shifts=(s, s), dims=(1, 2))
        return self.proj_drop(self.proj(out.reshape(B, N, C))), None


def _shifted_window_mask(grid: int, window: int, shift: int) -> torch.Tensor:
    """Swin's mask for a grid rolled by ``-shift``: (windows, 1, window^2, window^2), True where
    query and key lie in the same region of the rolled grid (tokens that were neighbours before
    the roll). Per axis the regions are [0, grid - window), [grid - window, grid - shift) and
    [grid - shift, grid): the last window holds the rolled-in border and the tokens before it."""
    bounds = (0, grid - window, grid - shift, grid)
    axis = torch.zeros(grid, dtype=torch.long)
    for label, (lo, hi) in enumerate(pairwise(bounds)):
        axis[lo:hi] = label
    regions = axis[:, None] * 3 + axis[None, :]  # (grid, grid) region label of each rolled position
    n = grid // window
    # (g, g) -> (n, w, n, w) -> (n, n, w, w) -> (n^2, w^2), windows and tokens in forward's order
    labels = regions.reshape(n, window, n, window).permute(0, 2, 1, 3).reshape(n * n, window * window)
    return (labels[:, :, None] == labels[:, None, :]).unsqueeze(1)


class GridAttention(QKVAttention):
    """Multi-head attention inside a dilated grid (MaxViT's grid attention, Tu et al. 2022): the
    patch grid is cut into ``window`` x ``window`` groups whose tokens lie ``grid // window``
    patches apart, so each group spans the whole picture sparsely; cost O(N * window^2 * d), as
    for local windows. Token (i, j) attends to the tokens (i', j') with i' = i and j' = j modulo
    ``grid // window``. Alternated with local windows (``attention='grid'``), every token reaches
    every other within two blocks where ``window >= grid // window`` (a local window spans the
    stride).

    Args:
        dim: token width.
        heads: number of heads; must divide ``dim``.
        grid: patches per side; the input has grid^2 tokens.
        window: tokens per side of a group; must divide ``grid``.
        attn_dropout: dropout on the attention probabilities (training only).
        proj_dropout: dropout after the output projection.
    """

    def __init__(
        self, dim: int, heads: int, grid: int, window: int, attn_dropout: float = 0.0, proj_dropout: float = 0.0
    ):
        super().__init__(dim, heads, attn_dropout, proj_dropout)
        if grid % window:
            raise ValueError(f"window ({window}) must divide the grid ({grid})")
        self.grid = grid
        self.window = window

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> tuple[torch.Tensor, None]:
        """Attend over ``x`` (B, grid^2, C) within dilated groups; returns the output and None (no maps)."""
        self._no_maps(return_attention)
        B, N, C = x.shape
        w = self.window
        n = self.grid // w  # the stride between a group's tokens, and the groups per side
        # row i = a * n + b: (B, g, g, 3C) -> (B, w, n, w, n, 3C) -> (B, n, n, w, w, 3C), group (b_i, b_j)
        qkv = self.qkv(x).reshape(B, w, n, w, n, 3 * C).permute(0, 2, 4, 1, 3, 5)
        qkv = qkv.reshape(B * n * n, w * w, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B * n^2, heads, w^2, d)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self._dropout_p())
        # (B * n^2, heads, w^2, d) -> (B, n, n, w, w, C) -> (B, w, n, w, n, C): back to row-major order
        out = out.transpose(1, 2).reshape(B, n, n, w, w, C).permute(0, 3, 1, 4, 2, 5)
        return self.proj_drop(self.proj(out.reshape(B, N, C))), None


class LinearAttention(QKVAttention):
    """Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"): the softmax kernel
    exp(q.k) is replaced by phi(q).phi(k) with phi(x) = elu(x) + 1, so the sum over keys factors
    out of the queries: out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i)^T sum_j phi(k_j)),
    O(N d^2) per head and never an (N, N) matrix.

    Without an attention matrix there are no probabilities to drop: ``attn_dropout`` drops whole
    keys instead (each key, per sample and head, with that probability, for every query), and the
    normaliser renormalises over the keys kept.

    Args:
        dim: token width.
        heads: number of heads; must divide ``dim``.
        attn_dropout: probability of dropping a key (training only).
        proj_dropout: dropout after the output projection.
        eps: added to the normaliser, which is positive but may be small.
    """

    def __init__(self, dim: int, heads: int, attn_dropout: float = 0.0, proj_dropout: float = 0.0, eps: float = 1e-6):
        super().__init__(dim, heads, attn_dropout, proj_dropout)
        self.eps = eps

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> tuple[torch.Tensor, None]:
        """Attend over ``x`` (B, N, C); returns the output and None (no maps)."""
        self._no_maps(return_attention)
        B, N, C = x.shape
        # (B, N, 3C) -> (3, B, heads, N, d)
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = F.elu(q) + 1, F.elu(k) + 1
        if self.training and self.attn_drop.p > 0:
            # keep mask (B, heads, N, 1); its 1 / (1 - p) scale cancels between sum and normaliser
            k = k * self.attn_drop(k.new_ones(B, self.heads, N, 1))
        kv = k.transpose(-2, -1) @ v  # (B, h, d, N) x (B, h, N, d) -> (B, h, d, d)
        z = q @ k.sum(dim=-2).unsqueeze(-1)  # (B, h, N, d) x (B, h, d, 1) -> (B, h, N, 1)
        out = (q @ kv) / (z + self.eps)  # (B, h, N, d)
        out = out.transpose(1, 2).reshape(B, N, C)  # (B, h, N, d) -> (B, N, C)
        return self.proj_drop(self.proj(out)), None


class KVPoolAttention(QKVAttention):
    """Softmax attention with keys and values from a coarser grid: queries from all N tokens, keys
    and values from the tokens averaged over ``pool`` x ``pool`` patches, N / pool^2 of them (the
    spatial-reduction attention of PVT, Wang et al. 2021, with average pooling in place of its
    strided convolution, so no parameters are added): cost O(N^2 d / pool^2).

    The one ``qkv`` layer serves both: its first C output rows make the queries from the tokens,
    the rest the keys and values from the pooled tokens (a linear layer commutes with averaging).

    Args:
        dim: token width.
        heads: number of heads; must divide ``dim``.
        grid: patches per side; the input has grid^2 tokens.
        pool: side of the pooled cells in patches; must divide ``grid``.
        attn_dropout: dropout on the attention probabilities (training only).
        proj_dropout: dropout after the output projection.
    """

    def __init__(
        self, dim: int, heads: int, grid: int, pool: int, attn_dropout: float = 0.0, proj_dropout: float = 0.0
    ):
        super().__init__(dim, heads, attn_dropout, proj_dropout)
        if grid % pool:
            raise ValueError(f"kv_pool ({pool}) must divide the grid ({grid})")
        self.grid = grid
        self.pool = pool

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> tuple[torch.Tensor, None]:
        """Attend from ``x`` (B, grid^2, C) to its pooled tokens; returns the output and None (no maps)."""
        self._no_maps(return_attention)
        B, N, C = x.shape
        g = self.grid
        # (B, N, C) -> (B, C, g, g) -> (B, C, g/pool, g/pool) -> (B, M, C), M = N / pool^2
        pooled = F.avg_pool2d(x.transpose(1, 2).reshape(B, C, g, g), self.pool).flatten(2).transpose(1, 2)
        M = pooled.shape[1]
        weight, bias = self.qkv.weight, self.qkv.bias
        q = F.linear(x, weight[:C], bias[:C]).reshape(B, N, self.heads, self.head_dim).transpose(1, 2)
        # (B, M, 2C) -> (2, B, heads, M, d)
        kv = F.linear(pooled, weight[C:], bias[C:]).reshape(B, M, 2, self.heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self._dropout_p())  # (B, h, N, d)
        out = out.transpose(1, 2).reshape(B, N, C)  # (B, h, N, d) -> (B, N, C)
        return self.proj_drop(self.proj(out)), None


def build_attention(config: ViTConfig, index: int) -> nn.Module:
    """The attention module of block ``index`` for ``config``; window attention shifts in odd blocks,
    and grid attention's odd blocks attend over the dilated grid, its even ones over local windows."""
    c = config
    if c.attention == "window":
        return WindowAttention(c.dim, c.heads, c.grid_size, c.window, index % 2 == 1, c.attn_dropout, c.dropout)
    if c.attention == "grid":
        if index % 2:
            return GridAttention(c.dim, c.heads, c.grid_size, c.window, c.attn_dropout, c.dropout)
        return WindowAttention(c.dim, c.heads, c.grid_size, c.window, False, c.attn_dropout, c.dropout)
    if c.attention == "linear":
        return LinearAttention(c.dim, c.heads, c.attn_dropout, c.dropout)
    if c.attention == "kvpool":
        return KVPoolAttention(c.dim, c.heads, c.grid_size, c.kv_pool, c.attn_dropout, c.dropout)
    return Attention(c.dim, c.heads, attn_dropout=c.attn_dropout, proj_dropout=c.dropout)
