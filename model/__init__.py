"""vit-digits model package: the ViT, the timm comparison model, checkpoints, preprocessing.

Depends only on torch, safetensors, Pillow/NumPy (preprocessing) and, lazily, timm.
"""

from model.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    LoadedCheckpoint,
    Preprocessing,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from model.config import ConfigError, ViTConfig
from model.factory import build_model, count_parameters, forward_with_attention, match_channels
from model.rollout import attention_rollout, cls_attention
from model.vit import ViT

__all__ = [
    "CheckpointError",
    "CheckpointMeta",
    "ConfigError",
    "LoadedCheckpoint",
    "Preprocessing",
    "ViT",
    "ViTConfig",
    "attention_rollout",
    "build_model",
    "cls_attention",
    "count_parameters",
    "forward_with_attention",
    "load_checkpoint",
    "match_channels",
    "read_meta",
    "save_checkpoint",
]
