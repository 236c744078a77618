"""timm's VisionTransformer as the comparison model, with its attention maps.

Built at the same width/depth/heads/patch/image size as our ViT, so the two have the same
parameter count (the comparison of the coursework). timm is imported lazily: serving our own
model never needs it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from model.config import ViTConfig

# The timm model that ``pretrained=True`` loads: ImageNet weights at 224x224, RGB, patch 16.
PRETRAINED_NAME = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"


def build_timm_vit(config: ViTConfig, pretrained: bool = False) -> nn.Module:
    """timm ``VisionTransformer`` matching ``config``.

    Args:
        config: the architecture; ``impl`` must be ``timm`` (stem linear, learned positions).
        pretrained: load ImageNet weights (needs internet). These fix the architecture to
            :data:`PRETRAINED_NAME` (patch 16, width 192, depth 12, 3 heads) at 224x224 input,
            normalised as that model was trained (mean = std = 0.5 per channel, timm's
            ``pretrained_cfg``); only the head is new (10 classes). ``config`` then supplies only
            ``num_classes`` and ``in_chans``. With ``in_chans=1`` timm adapts the pretrained RGB
            patch embedding by summing its kernels over the three channels: because the three
            channels are normalised alike, that is the same network fed the grey digit replicated
            to RGB. (timm can also take
            another input size, a multiple of 16, through ``img_size``: it then resamples the
            position embeddings; this project keeps 224.)
    """
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if pretrained:
        model: nn.Module = timm.create_model(
            PRETRAINED_NAME, pretrained=True, num_classes=config.num_classes, in_chans=config.in_chans
        )
        return model
    kwargs: dict[str, Any] = dict(
        img_size=config.image_size,
        patch_size=config.patch_size,
        in_chans=config.in_chans,
        num_classes=config.num_classes,
        embed_dim=config.dim,
        depth=config.depth,
        num_heads=config.heads,
        mlp_ratio=config.mlp_ratio,
        qkv_bias=True,
        class_token=config.pool == "cls",
        global_pool="token" if config.pool == "cls" else "avg",
        fc_norm=False,  # one final LayerNorm before pooling, as in our ViT
        drop_rate=config.dropout,
        proj_drop_rate=config.dropout,
        attn_drop_rate=config.attn_dropout,
        drop_path_rate=config.drop_path,
    )
    return VisionTransformer(**kwargs)


def timm_forward_with_attention(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and (B, layers, heads, N, N) attention from a timm VisionTransformer.

    timm's fused path calls ``scaled_dot_product_attention`` and never materialises the softmax,
    so for this call each block uses its explicit path, and a pre-hook on ``attn_drop`` (applied
    right after the softmax) records the probabilities. The fused flags are restored afterwards.
    """
    maps: list[torch.Tensor] = []
    handles, fused = [], []
    blocks = list(model.blocks)  # type: ignore[attr-defined, arg-type]
    for block in blocks:
        fused.append(block.attn.fused_attn)
        block.attn.fused_attn = False
        handles.append(block.attn.attn_drop.register_forward_pre_hook(lambda _m, args: maps.append(args[0])))
    try:
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
        for block, flag in zip(blocks, fused, strict=False):
            block.attn.fused_attn = flag
    return logits, torch.stack(maps, dim=1)
