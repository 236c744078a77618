"""The models the service serves: loaded once, warmed up, each with its own batchers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from app.batcher import MicroBatcher
from app.inference import (
    AttentionResult,
    Prediction,
    Runtime,
    WithAttention,
    attention_fn,
    build_runner,
    predict_fn,
    resolve_runtime,
)
from app.metrics import Metrics
from app.settings import Settings
from model.checkpoint import LoadedCheckpoint, load_checkpoint
from model.device import resolve_device
from model.factory import count_parameters

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model that cannot be served. Its message names model ids, never a filesystem path (it is
    shown to anyone on /readyz); ``detail`` has the whole story, paths included, for the logs."""

    def __init__(self, message: str, detail: str):
        super().__init__(message)
        self.detail = detail


class NoModelsError(ModelLoadError):
    """Nothing to serve: no checkpoint found where the settings point."""


@dataclass
class ServedModel:
    """One loaded checkpoint with its predict and attention batchers."""

    loaded: LoadedModel
    predict: MicroBatcher[Prediction]
    attention: MicroBatcher[AttentionResult]

    @property
    def id(self) -> str:
        return self.loaded.id

    @property
    def checkpoint(self) -> LoadedCheckpoint:
        return self.loaded.checkpoint

    @property
    def device(self) -> torch.device:
        return self.loaded.device

    @property
    def dtype(self) -> torch.dtype:
        return self.loaded.dtype

    def info(self, default: bool) -> dict[str, Any]:
        meta = self.checkpoint.meta
        config = meta.config
        return {
            "id": self.id,
            "default": default,
            "architecture": "timm VisionTransformer" if config.impl == "timm" else "vit-digits ViT",
            "config": config.to_dict(),
            "parameters": count_parameters(self.checkpoint.model),
            "patch_grid": config.grid_size,
            "labels": list(meta.labels),
            "test_accuracy": meta.training.get("test_accuracy"),
            "trained_at": meta.training.get("created"),
            "sha256": self.checkpoint.sha256,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "runtime": self.loaded.runtime,
            "calibration": {k: v for k, v in meta.calibration.to_json().items() if k != "fitted"},
        }


@dataclass
class Registry:
    """All served models by id, and which one answers when a request names none."""

    models: dict[str, ServedModel] = field(default_factory=dict)
    default_id: str = ""

    def get(self, model_id: str | None) -> ServedModel | None:
        return self.models.get(model_id or self.default_id)

    async def stop(self) -> None:
        for served in self.models.values():
            await served.predict.stop()
            await served.attention.stop()


def checkpoint_files(paths: list[Path]) -> list[Path]:
    """The checkpoint files named directly or found (``*.safetensors``) in the named folders."""
    files: list[Path] = []
    for path in paths:
        files += sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files:
        raise NoModelsError(
            "no checkpoint to serve: VIT_DIGITS_CHECKPOINTS names no *.safetensors file",
            f"no *.safetensors checkpoint in {', '.join(map(str, paths))}",
        )
    return files


@dataclass(frozen=True)
class LoadedModel:
    """A checkpoint made ready to serve: its batched predict and attention functions, warmed up."""

    id: str
    checkpoint: LoadedCheckpoint
    device: torch.device
    dtype: torch.dtype
    runtime: Runtime
    predict: Callable[[torch.Tensor], list[Prediction]]
    attention: Callable[[torch.Tensor], list[AttentionResult]]


def load_models(settings: Settings) -> list[LoadedModel]:
    """Load, compile and warm up every checkpoint (blocking; run it off the event loop)."""
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    device = resolve_device(settings.device)
    dtype = torch.float16 if settings.half and device.type == "cuda" else torch.float32
    runtime = resolve_runtime(settings.runtime, device)
    loaded = []
    for path in checkpoint_files(settings.checkpoints):
        try:
            loaded.append(_load_model(path, settings, device, dtype, runtime))
        except Exception as exc:
            detail = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            message = str(exc).replace(str(path.resolve()), path.name).replace(str(path), path.name)
            raise ModelLoadError(f"model {path.stem!r} cannot be served: {message}", detail) from exc
    return loaded


def _load_model(
    path: Path, settings: Settings, device: torch.device, dtype: torch.dtype, runtime: Runtime
) -> LoadedModel:
    """Load, compile and warm up one checkpoint."""
    ckpt = load_checkpoint(path, device=device)
    model = ckpt.model.to(dtype)
    pre, chans = ckpt.meta.preprocess, ckpt.meta.config.in_chans
    example = torch.randn(4, chans, pre.image_size, pre.image_size, device=device, dtype=dtype)
    predict_runner, used = build_runner(model, example, runtime, settings.torch_threads)
    attention_runner, _ = build_runner(WithAttention(model), example, runtime, settings.torch_threads)
    predict = predict_fn(predict_runner, ckpt, device, dtype)
    attention = attention_fn(attention_runner, ckpt, device, dtype)
    for batch in sorted({1, max(settings.max_batch_size // 4, 1), settings.max_batch_size}):
        predict(example[:1].expand(batch, -1, -1, -1))  # warm-up: allocations, kernel choices
    attention(example[:1])
    log.info("loaded model", extra={"model": path.stem, "device": str(device), "runtime": used, "sha256": ckpt.sha256})
    return LoadedModel(path.stem, ckpt, device, dtype, used, predict, attention)


def build_registry(
    loaded: list[LoadedModel], settings: Settings, metrics: Metrics, executor: ThreadPoolExecutor
) -> Registry:
    """Wrap loaded models in batchers (on the running event loop) and pick the default."""
    registry = Registry()
    for m in loaded:
        common: dict[str, Any] = dict(
            max_wait_s=settings.max_wait_ms / 1000, queue_size=settings.queue_size, executor=executor, metrics=metrics
        )
        served = ServedModel(
            loaded=m,
            predict=MicroBatcher(
                m.predict, max_batch=settings.max_batch_size, labels={"model": m.id, "kind": "predict"}, **common
            ),
            attention=MicroBatcher(
                m.attention,
                max_batch=max(settings.max_batch_size // 4, 1),
                labels={"model": m.id, "kind": "attention"},
                **common,
            ),
        )
        served.predict.start()
        served.attention.start()
        registry.models[m.id] = served
    default = settings.default_model or next(iter(registry.models))
    if default not in registry.models:
        message = f"default model {default!r} is not among the loaded: {', '.join(registry.models)}"
        raise NoModelsError(message, message)
    registry.default_id = default
    return registry
