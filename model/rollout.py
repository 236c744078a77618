"""Reading attention maps as images: attention rollout and the last layer's CLS attention.

NumPy only (the serving process computes them without torch); a CPU torch tensor is accepted as
input and read as an array.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def attention_rollout(attention: ArrayLike, num_prefix_tokens: int = 1) -> NDArray[np.float32]:
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
    attn = np.asarray(attention, dtype=np.float32)
    B, L, _, N, _ = attn.shape
    eye = np.eye(N, dtype=np.float32)
    joint = np.broadcast_to(eye, (B, N, N))
    for layer in range(L):
        a = attn[:, layer].mean(axis=1) + eye  # (B, N, N)
        a = a / a.sum(axis=-1, keepdims=True)  # rows (queries) sum to 1: normalise over keys
        joint = a @ joint
    flow = joint[:, 0] if num_prefix_tokens else joint.mean(axis=1)  # (B, N)
    return _to_grid(flow[:, num_prefix_tokens:])


def cls_attention(attention: ArrayLike, layer: int = -1, num_prefix_tokens: int = 1) -> NDArray[np.float32]:
    """One layer's attention from the class token to the patches, per head: (B, heads, g, g).

    Average over axis 1 for the head-mean map. With no class token the query rows are averaged.
    Each map is renormalised to sum to 1 over the patches.
    """
    a = np.asarray(attention, dtype=np.float32)[:, layer]  # (B, h, N, N)
    rows = a[:, :, 0] if num_prefix_tokens else a.mean(axis=2)  # (B, h, N)
    return _to_grid(rows[..., num_prefix_tokens:])


def _to_grid(patch_weights: NDArray[np.float32]) -> NDArray[np.float32]:
    """(..., P) -> (..., g, g), renormalised to sum to 1 over the P = g*g patches."""
    side = round(patch_weights.shape[-1] ** 0.5)
    if side * side != patch_weights.shape[-1]:
        raise ValueError(f"{patch_weights.shape[-1]} patch tokens do not form a square grid")
    w = patch_weights / np.maximum(patch_weights.sum(axis=-1, keepdims=True), 1e-12)
    return w.reshape(*w.shape[:-1], side, side)
