"""Vision Transformer for digits, written from scratch.

Forward reads top to bottom: patches -> (CLS, distillation token) -> position -> blocks -> norm
-> pool -> head (with a distillation token: the mean of its head and the class token's).
"""

from __future__ import annotations

import torch
from torch import nn

from model.block import Block
from model.config import ViTConfig
from model.efficient_attention import build_attention
from model.embedding import ConvStem, PatchEmbed, sincos_2d


class ViT(nn.Module):
    """Vision Transformer classifier configured by a :class:`ViTConfig`.

    ``forward(x)`` returns logits (B, classes); ``forward(x, both_heads=True)`` returns the class
    token's and the distillation token's logits apart (training with ``config.distill_token``).
    ``forward_with_attention(x)`` returns
    ``(logits, attention)`` with attention (B, layers, heads, N, N), N = prefix + patch tokens,
    computed by an explicit softmax; the logits are the same as on the fused path. Only full
    attention has maps: with another ``config.attention`` it raises ValueError.
    """

    pos_table: torch.Tensor  # the fixed sincos2d table, a buffer (only with pos_embed="sincos2d")

    def __init__(self, config: ViTConfig):
        super().__init__()
        if config.impl != "ours":
            raise ValueError(f"ViT builds impl='ours'; got impl={config.impl!r} (use build_model)")
        c = config
        self.config = c
        stem = ConvStem if c.stem == "conv" else PatchEmbed
        self.patch_embed = stem(c.in_chans, c.dim, c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim)) if c.pool == "cls" else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, c.dim)) if c.distill_token else None
        n_tokens = c.num_prefix_tokens + c.num_patches
        self.pos_embed: nn.Parameter | None = None
        if c.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.randn(1, n_tokens, c.dim) * 0.02)
        elif c.pos_embed == "sincos2d":
            # fixed: a buffer, saved in checkpoints but never trained; the class token gets zeros
            table = torch.zeros(1, n_tokens, c.dim)
            table[0, c.num_prefix_tokens :] = sincos_2d(c.grid_size, c.dim)
            self.register_buffer("pos_table", table)
        self.pos_drop = nn.Dropout(c.dropout)
        rates = [c.drop_path * i / max(c.depth - 1, 1) for i in range(c.depth)]
        self.blocks = nn.ModuleList(
            Block(c.dim, c.heads, c.mlp_ratio, c.dropout, c.attn_dropout, rate, build_attention(c, i))
            for i, rate in enumerate(rates)
        )
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.num_classes)
        self.head_dist = nn.Linear(c.dim, c.num_classes) if c.distill_token else None
        self.apply(_init_weights)
        for token in (self.cls_token, self.dist_token):
            if token is not None:
                nn.init.normal_(token, std=1e-6)

    def forward_features(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images (B, C, H, W) -> normalised tokens (B, N, dim) and optional stacked attention."""
        if return_attention and self.config.attention != "full":
            raise ValueError(
                f"attention maps need attention='full'; this model has attention={self.config.attention!r}, "
                f"which computes no (N, N) attention matrix"
            )
        x = self.patch_embed(x)  # (B, patches, dim)
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.dist_token) if t is not None]
        if prefix:
            x = torch.cat([*prefix, x], dim=1)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        elif self.config.pos_embed == "sincos2d":
            x = x + self.pos_table
        x = self.pos_drop(x)
        maps: list[torch.Tensor] = []
        for block in self.blocks:
            x, attn = block(x, return_attention=return_attention)
            if attn is not None:
                maps.append(attn)
        attention = torch.stack(maps, dim=1) if return_attention else None  # (B, L, h, N, N)
        return self.norm(x), attention

    def forward_heads(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The class token's logits (or the mean token's, with mean pooling) and the distillation
        token's (the same logits again without one)."""
        pooled = tokens[:, 0] if self.cls_token is not None else tokens.mean(dim=1)
        logits = self.head(pooled)
        if self.head_dist is None:
            return logits, logits
        return logits, self.head_dist(tokens[:, 1])

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Classify: the class token's head, averaged with the distillation token's if there is one."""
        logits, distilled = self.forward_heads(tokens)
        return logits if self.head_dist is None else (logits + distilled) / 2

    def forward(self, x: torch.Tensor, both_heads: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) -> logits (B, classes), on the fused attention path; with
        ``both_heads`` the pair of :meth:`forward_heads` instead."""
        tokens, _ = self.forward_features(x)
        return self.forward_heads(tokens) if both_heads else self.forward_head(tokens)

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images -> (logits, attention (B, layers, heads, N, N)) on the explicit-softmax path."""
        tokens, attention = self.forward_features(x, return_attention=True)
        assert attention is not None
        return self.forward_head(tokens), attention


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
