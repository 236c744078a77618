"""vit-digits model package: the ViT, the timm comparison model, checkpoints, preprocessing.

The names below are imported on first use (PEP 562), so that the torch-free parts (preprocessing,
calibration, checkpoint metadata, the ONNX serving artifact) can be used without importing torch:
``import model.preprocess`` costs no torch, ``from model import ViT`` does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.checkpoint import LoadedCheckpoint, load_checkpoint, save_checkpoint
    from model.config import ConfigError, ViTConfig
    from model.factory import build_model, count_parameters, forward_with_attention, match_channels
    from model.meta import CheckpointError, CheckpointMeta, Preprocessing, read_meta
    from model.rollout import attention_rollout, cls_attention
    from model.vit import ViT

_WHERE = {
    "CheckpointError": "model.meta",
    "CheckpointMeta": "model.meta",
    "Preprocessing": "model.meta",
    "read_meta": "model.meta",
    "LoadedCheckpoint": "model.checkpoint",
    "load_checkpoint": "model.checkpoint",
    "save_checkpoint": "model.checkpoint",
    "ConfigError": "model.config",
    "ViTConfig": "model.config",
    "build_model": "model.factory",
    "count_parameters": "model.factory",
    "forward_with_attention": "model.factory",
    "match_channels": "model.factory",
    "attention_rollout": "model.rollout",
    "cls_attention": "model.rollout",
    "ViT": "model.vit",
}

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


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
