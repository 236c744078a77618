"""Reading attention maps as images: attention rollout and the last layer's CLS attention."""

from __future__ import annotations

import torch


def attention_rollout(attention: torch.Tensor, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020) on the patch grid.

    Per layer: average the heads, add the identity for the residual path, renormalise each row to
    sum to 1 (rows are queries: each token's attention over the keys); then multiply the layers,
    the first layer rightmost. The class token's row of the product says how much each input
    patch flows into it. With no class token (mean pooling) the rows of all tokens are averaged,
    as the mean-pooled head reads all of them.

    Args:
        attention: (B, layers, heads, N, N) probabilities, rows summing to 1.
        num_prefix_tokens: tokens before the patches (1 for the class token, 0 for none).

    Returns:
        (B, g, g) maps over the patch grid, each summing to 1.
    """
    B, L, _, N, _ = attention.shape
    eye = torch.eye(N, dtype=attention.dtype, device=attention.device)
    joint = eye.expand(B, N, N)
    for layer in range(L):
        a = attention[:, layer].mean(dim=1) + eye  # (B, N, N)
        a = a / a.sum(dim=-1, keepdim=True)  # rows (queries) sum to 1: normalise over keys
        joint = a @ joint
    flow = joint[:, 0] if num_prefix_tokens else joint.mean(dim=1)  # (B, N)
    return _to_grid(flow[:, num_prefix_tokens:])


def cls_attention(attention: torch.Tensor, layer: int = -1, num_prefix_tokens: int = 1) -> torch.Tensor:
    """One layer's attention from the class token to the patches, per head: (B, heads, g, g).

    Average over dim 1 for the head-mean map. With no class token the query rows are averaged.
    Each map is renormalised to sum to 1 over the patches.
    """
    a = attention[:, layer]  # (B, h, N, N)
    rows = a[:, :, 0] if num_prefix_tokens else a.mean(dim=2)  # (B, h, N)
    return _to_grid(rows[..., num_prefix_tokens:])


def _to_grid(patch_weights: torch.Tensor) -> torch.Tensor:
    """(..., P) -> (..., g, g), renormalised to sum to 1 over the P = g*g patches."""
    side = round(patch_weights.shape[-1] ** 0.5)
    if side * side != patch_weights.shape[-1]:
        raise ValueError(f"{patch_weights.shape[-1]} patch tokens do not form a square grid")
    w = patch_weights / patch_weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return w.reshape(*w.shape[:-1], side, side)
