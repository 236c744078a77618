"""The models the service serves: loaded once, warmed up, each with its own batchers.

One artifact per device: on CPU a model is served from its ONNX export with ONNX Runtime, and torch
is never imported; on CUDA from its PyTorch checkpoint with torch (:mod:`app.torch_runtime`). A
checkpoint without an export is served by torch on CPU too, with a warning, or refused with the
command that makes the export where torch is not installed.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.batcher import MicroBatcher
from app.inference import AttentionResult, Prediction, Runners, attention_fn, onnx_runners, predict_fn
from app.metrics import Metrics
from app.settings import Settings
from model.device import DeviceError
from model.meta import CheckpointError, CheckpointMeta, file_sha256
from model.onnx_model import load_onnx

log = logging.getLogger(__name__)
NVIDIA_DRIVER = Path("/proc/driver/nvidia")


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
    def meta(self) -> CheckpointMeta:
        return self.loaded.meta

    @property
    def sha256(self) -> str:
        return self.loaded.sha256

    def info(self, default: bool) -> dict[str, Any]:
        meta, loaded = self.meta, self.loaded
        config = meta.config
        return {
            "id": self.id,
            "default": default,
            "architecture": "timm VisionTransformer" if config.impl == "timm" else "vit-digits ViT",
            "config": config.to_dict(),
            "parameters": loaded.parameters,
            "patch_grid": config.grid_size,
            "labels": list(meta.labels),
            "test_accuracy": meta.training.get("test_accuracy"),
            "trained_at": meta.training.get("created"),
            "sha256": loaded.sha256,
            "served_from": loaded.served_from,
            "device": loaded.device,
            "dtype": loaded.dtype,
            "runtime": loaded.runtime,
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


@dataclass(frozen=True)
class ModelFiles:
    """The files of one model id: its checkpoint and/or its ONNX export (same stem)."""

    id: str
    checkpoint: Path | None
    export: Path | None


MODEL_SUFFIXES = (".safetensors", ".onnx")


def model_files(paths: list[Path]) -> list[ModelFiles]:
    """The models named directly (a ``.safetensors`` or ``.onnx`` file, with its sibling of the other
    kind if there is one) or found in the named folders, by id (the file stem).

    Raises:
        ModelLoadError: a named path that does not exist or is not a model file, or one id found
            in two folders (which would make one model of two unrelated files).
        NoModelsError: nothing to serve.
    """
    found: dict[str, dict[str, Path]] = {}
    for path in paths:
        if path.is_dir():
            files = sorted(f for suffix in MODEL_SUFFIXES for f in path.glob(f"*{suffix}"))
        elif path.is_file() and path.suffix in MODEL_SUFFIXES:
            files = [path, *(s for s in (path.with_suffix(x) for x in MODEL_SUFFIXES) if s != path and s.is_file())]
        else:
            why = "is not a .safetensors or .onnx file" if path.exists() else "does not exist"
            raise ModelLoadError(f"model {path.stem!r} cannot be served: {path.name} {why}", f"{path} {why}")
        for file in files:
            entry = found.setdefault(file.stem, {})
            other = next(iter(entry.values()), None)
            if other is not None and other.parent.resolve() != file.parent.resolve():
                message = f"model id {file.stem!r} is found in two folders; rename one of them"
                raise ModelLoadError(message, f"{message}: {other} and {file}")
            entry[file.suffix] = file
    if not found:
        raise NoModelsError(
            "no model to serve: VIT_DIGITS_CHECKPOINTS names no *.safetensors or *.onnx file",
            f"no *.safetensors or *.onnx file in {', '.join(map(str, paths))}",
        )
    return [ModelFiles(stem, f.get(".safetensors"), f.get(".onnx")) for stem, f in found.items()]


@dataclass(frozen=True)
class LoadedModel:
    """A model made ready to serve: its batched predict and attention functions, warmed up."""

    id: str
    meta: CheckpointMeta
    sha256: str  # of the .safetensors checkpoint (the model's identity, whichever file is served)
    parameters: int
    served_from: str  # the file name
    device: str
    dtype: str
    runtime: str
    predict: Callable[[np.ndarray], list[Prediction]]
    attention: Callable[[np.ndarray], list[AttentionResult]]


def load_models(settings: Settings) -> list[LoadedModel]:
    """Load and warm up every model (blocking; run it off the event loop)."""
    device = serving_device(settings.device)
    loaded = []
    for files in model_files(settings.checkpoints):
        path = files.export or files.checkpoint
        if path is None:  # model_files never makes one; a clear error rather than an assert
            raise ModelLoadError(f"model {files.id!r} has no file", f"model {files.id!r} has no file")
        try:
            loaded.append(_load_model(files, settings, device))
        except Exception as exc:
            detail = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            message = str(exc)
            for p in (files.export, files.checkpoint):
                if p is not None:
                    message = message.replace(str(p.resolve()), p.name).replace(str(p), p.name)
            raise ModelLoadError(f"model {files.id!r} cannot be served: {message}", detail) from exc
    return loaded


def serving_device(requested: str) -> str:
    """The device to serve on: ``cpu``, or a CUDA device (which needs torch).

    ``auto`` is CUDA when torch is installed and an NVIDIA driver is loaded, else CPU; the driver
    is looked for first (``/proc/driver/nvidia``), so that a CPU host with torch installed does not
    import it just to learn that there is no GPU.

    Raises:
        DeviceError: a CUDA device asked for where there is none, or without torch installed.
    """
    if requested == "cpu":
        return "cpu"
    has_torch = importlib.util.find_spec("torch") is not None
    if requested == "auto" and (not has_torch or not NVIDIA_DRIVER.exists()):
        return "cpu"
    if not has_torch:
        raise DeviceError(f"device {requested!r} needs torch: pip install 'vit-digits[torch]' (or the CUDA image)")
    from model.device import resolve_device

    return str(resolve_device(requested))


@dataclass(frozen=True)
class Runnable:
    """A model's file made ready to run: its metadata, what runs it, and what /v1/models says of it."""

    meta: CheckpointMeta
    runners: Runners
    sha256: str  # of the .safetensors checkpoint
    parameters: int
    served_from: str  # the file name
    dtype: str


def attention_batch_size(settings: Settings) -> int:
    """Attention requests batched at once: a quarter of predictions', as each returns every
    layer's maps and costs several times a prediction."""
    return max(settings.max_batch_size // 4, 1)


def _load_model(files: ModelFiles, settings: Settings, device: str) -> LoadedModel:
    """Load and warm up one model: on CPU its ONNX export, run by ONNX Runtime; on CUDA (or on CPU
    without an export) its checkpoint, run by torch."""
    if device == "cpu" and files.export is not None:
        runnable = _from_export(files.export, files.checkpoint, settings.torch_threads)
    else:
        runnable = _from_checkpoint(files, settings, device)
    meta, runners = runnable.meta, runnable.runners
    predict, attention = predict_fn(runners, meta), attention_fn(runners, meta)
    pre = meta.preprocess
    shape = (1, len(pre.mean), pre.image_size, pre.image_size)  # what preprocessing makes for this model
    example = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    for batch in sorted({1, attention_batch_size(settings), settings.max_batch_size}):
        predict(np.repeat(example, batch, axis=0))  # warm-up: allocations, kernel choices
    attention(example)
    extra = {"model": files.id, "device": device, "runtime": runners.runtime, "sha256": runnable.sha256}
    log.info("loaded model", extra=extra)
    return LoadedModel(
        id=files.id,
        meta=meta,
        sha256=runnable.sha256,
        parameters=runnable.parameters,
        served_from=runnable.served_from,
        device=device,
        dtype=runnable.dtype,
        runtime=runners.runtime,
        predict=predict,
        attention=attention,
    )


def _from_export(export: Path, checkpoint: Path | None, threads: int) -> Runnable:
    """The ONNX export at ``export``, run by ONNX Runtime; refused if ``checkpoint`` (its sibling)
    is not the checkpoint it was exported from."""
    exported = load_onnx(export, threads)
    if checkpoint is not None and file_sha256(checkpoint) != exported.checkpoint_sha256:
        raise CheckpointError(
            f"{export} was exported from another checkpoint than {checkpoint} (sha256 "
            f"{exported.checkpoint_sha256[:12]}…); export it again: python -m training export {checkpoint}"
        )
    runners = onnx_runners(exported)
    return Runnable(exported.meta, runners, exported.checkpoint_sha256, exported.parameters, export.name, "float32")


def _from_checkpoint(files: ModelFiles, settings: Settings, device: str) -> Runnable:
    """The model's checkpoint, run by torch on ``device``. On CPU that is a model without an ONNX
    export: served with a warning where torch is installed, refused with the command that makes the
    export where it is not."""
    checkpoint = files.checkpoint
    if checkpoint is None:
        assert files.export is not None  # model_files makes no model without a file
        raise CheckpointError(
            f"{files.export} is an ONNX export, which serves on CPU only; to serve on {device}, put its checkpoint "
            f"{files.id}.safetensors next to it"
        )
    command = f"python -m training export {checkpoint}"
    if device == "cpu" and importlib.util.find_spec("torch") is None:
        raise CheckpointError(
            f"{checkpoint} has no ONNX export next to it, and torch is not installed to run it: export it where "
            f"torch is, with {command} (make export, for the shipped model; in the compose setup: docker compose "
            f"--profile train run --rm train export /srv/checkpoints/{checkpoint.name})"
        )
    if device == "cpu":
        log.warning(
            "model %r has no ONNX export: served by torch on CPU, slower than ONNX Runtime; export it with %s "
            "(make export, for the shipped model)",
            files.id,
            command,
        )
    return _torch_model(checkpoint, settings, device)


def _torch_model(path: Path, settings: Settings, device: str) -> Runnable:
    """The checkpoint at ``path`` loaded with torch on ``device``."""
    import torch

    from app.torch_runtime import torch_runners
    from model.checkpoint import load_checkpoint
    from model.factory import count_parameters

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    target = torch.device(device)
    dtype = torch.float16 if settings.half and target.type == "cuda" else torch.float32
    ckpt = load_checkpoint(path, device=target)
    if ckpt.meta.config.attention != "full":
        raise CheckpointError(
            f"{path} is an experiment's attention={ckpt.meta.config.attention!r} model, which has no attention "
            f"maps to serve; the service serves models with full attention"
        )
    runners = torch_runners(ckpt, target, dtype)
    dtype_name = str(dtype).removeprefix("torch.")
    return Runnable(ckpt.meta, runners, ckpt.sha256, count_parameters(ckpt.model), path.name, dtype_name)


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
                max_batch=attention_batch_size(settings),
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
