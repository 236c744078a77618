"""The one checkpoint format: a single ``.safetensors`` file, weights plus JSON metadata.

Layout: the tensors are the model's ``state_dict``; the safetensors header metadata holds
``format`` (``vit-digits``), ``format_version`` and ``meta``, a JSON object with

- ``model``: the :class:`~model.config.ViTConfig` fields,
- ``preprocess``: input size and the normalisation mean/std per channel,
- ``labels``: the class names, in logit order,
- ``training``: a free-form summary (accuracy, epochs, seed, dataset checksum, commit, versions),
- ``calibration`` (optional): temperature and not-a-digit threshold (:mod:`model.calibration`),
- ``weights_sha256``: a digest of the tensor bytes, so corruption inside the data is caught too.

Loading parses JSON and raw tensor bytes only; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from model.calibration import Calibration
from model.config import ConfigError, ViTConfig
from model.factory import build_model

FORMAT = "vit-digits"
FORMAT_VERSION = 1
DIGIT_LABELS = tuple(str(d) for d in range(10))


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Preprocessing:
    """What the model expects as input: square size and per-channel normalisation."""

    image_size: int = 28
    mean: tuple[float, ...] = (0.1307,)
    std: tuple[float, ...] = (0.3081,)


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything in a checkpoint but the weights."""

    config: ViTConfig
    preprocess: Preprocessing = field(default_factory=Preprocessing)
    labels: tuple[str, ...] = DIGIT_LABELS
    training: dict[str, Any] = field(default_factory=dict)
    calibration: Calibration = field(default_factory=Calibration)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.config.to_dict(),
            "preprocess": {
                "image_size": self.preprocess.image_size,
                "mean": list(self.preprocess.mean),
                "std": list(self.preprocess.std),
            },
            "labels": list(self.labels),
            "training": self.training,
            "calibration": self.calibration.to_json(),
        }


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A model rebuilt from a checkpoint, in eval mode, with its metadata and file digest."""

    model: nn.Module
    meta: CheckpointMeta
    sha256: str
    path: Path


def save_checkpoint(path: str | Path, model: nn.Module, meta: CheckpointMeta) -> str:
    """Write ``model``'s weights and ``meta`` to ``path`` atomically; returns the file's sha256."""
    if len(meta.labels) != meta.config.num_classes:
        raise CheckpointError(f"{len(meta.labels)} labels for a model with {meta.config.num_classes} classes")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    payload = meta.to_json() | {"weights_sha256": _tensor_digest(tensors)}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "meta": json.dumps(payload, sort_keys=True),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a model file is for other users too
        os.replace(tmp, path)  # readers never see a half-written checkpoint
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return file_sha256(path)


def read_meta(path: str | Path) -> CheckpointMeta:
    """Read and validate a checkpoint's metadata without loading its weights."""
    return _meta_from_payload(Path(path), _read_payload(Path(path)))


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the model stored at ``path`` on ``device``, in eval mode.

    Raises:
        CheckpointError: missing, truncated or corrupted file, foreign or newer format, invalid
            config, or weights that do not fit the config; the message says which.
    """
    path = Path(path)
    payload = _read_payload(path)
    meta = _meta_from_payload(path, payload)
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot read the weights ({exc})") from exc
    if _tensor_digest(tensors) != payload.get("weights_sha256"):
        raise CheckpointError(f"{path}: the weights do not match their recorded digest (corrupted)")
    model = build_model(meta.config)
    _load_weights(path, model, tensors)
    model.to(device).eval()
    return LoadedCheckpoint(model=model, meta=meta, sha256=file_sha256(path), path=path)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _read_payload(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: permission denied (the serving user cannot read it)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupted?): {exc}") from exc
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint (no '{FORMAT}' format tag)")
    version = metadata.get("format_version", "")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is not supported "
            f"(this code reads up to {FORMAT_VERSION}); upgrade vit-digits"
        )
    try:
        payload = json.loads(metadata["meta"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: checkpoint metadata is missing or not JSON") from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: checkpoint metadata is not a JSON object")
    return payload


def _meta_from_payload(path: Path, payload: dict[str, Any]) -> CheckpointMeta:
    try:
        config = ViTConfig.from_dict(payload["model"])
        pre = payload.get("preprocess", {})
        preprocess = Preprocessing(
            image_size=int(pre.get("image_size", config.image_size)),
            mean=tuple(float(m) for m in pre.get("mean", Preprocessing.mean)),
            std=tuple(float(s) for s in pre.get("std", Preprocessing.std)),
        )
        labels = tuple(str(label) for label in payload.get("labels", DIGIT_LABELS))
        calibration = Calibration.from_json(payload.get("calibration") or {})
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"{path}: invalid model metadata: {exc}") from exc
    if len(labels) != config.num_classes:
        raise CheckpointError(f"{path}: {len(labels)} labels for {config.num_classes} classes")
    return CheckpointMeta(config, preprocess, labels, dict(payload.get("training", {})), calibration)


def _load_weights(path: Path, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in expected.keys() & tensors.keys() if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        parts = [
            f"{label}: {', '.join(keys[:5])}{' …' if len(keys) > 5 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        raise CheckpointError(f"{path}: weights do not fit the stored config ({'; '.join(parts)})")
    model.load_state_dict(tensors)


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
