"""The one checkpoint format: a single ``.safetensors`` file, weights plus JSON metadata.

Layout: the tensors are the model's ``state_dict``; the safetensors header metadata holds
``format`` (``vit-digits``), ``format_version`` and ``meta``, the JSON object described in
:mod:`model.meta`, plus ``weights_sha256``: a digest of the tensor bytes, so corruption inside the
data is caught too.

Loading parses JSON and raw tensor bytes only; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from model.factory import build_model
from model.meta import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    CheckpointMeta,
    file_sha256,
    meta_from_payload,
    read_meta,
    read_payload,
)

# names that callers import from here too
__all__ = [
    "CheckpointError",
    "CheckpointMeta",
    "LoadedCheckpoint",
    "file_sha256",
    "load_checkpoint",
    "read_meta",
    "save_checkpoint",
]


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


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the model stored at ``path`` on ``device``, in eval mode.

    Raises:
        CheckpointError: missing, truncated or corrupted file, foreign or newer format, invalid
            config, or weights that do not fit the config; the message says which.
    """
    path = Path(path)
    payload = read_payload(path)
    meta = meta_from_payload(path, payload)
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
