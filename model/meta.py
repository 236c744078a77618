"""Checkpoint metadata: what a model expects and what it was trained and calibrated on.

Shared by the two files a model comes in (:mod:`model.checkpoint`, the safetensors weights used
for training, and :mod:`model.onnx_export`, the ONNX graph used for serving) and readable without
torch, so that the serving process never imports it. The metadata is a JSON object with

- ``model``: the :class:`~model.config.ViTConfig` fields,
- ``preprocess``: input size and the normalisation mean/std per channel,
- ``labels``: the class names, in logit order,
- ``training``: a free-form summary (accuracy, epochs, seed, dataset checksum, commit, versions),
- ``calibration`` (optional): temperature and not-a-digit threshold (:mod:`model.calibration`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.calibration import Calibration
from model.config import ConfigError, ViTConfig

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

    def __post_init__(self) -> None:
        pre, chans = self.preprocess, self.config.in_chans
        if len(pre.mean) == len(pre.std) == 1 and chans > 1:  # one grey channel, replicated (RGB models)
            object.__setattr__(self, "preprocess", Preprocessing(pre.image_size, pre.mean * chans, pre.std * chans))
        elif not len(pre.mean) == len(pre.std) == chans:
            raise CheckpointError(
                f"preprocessing normalises {len(pre.mean)} channels ({len(pre.std)} std); the model takes {chans}"
            )

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


def read_meta(path: str | Path) -> CheckpointMeta:
    """Read and validate a checkpoint's metadata without loading its weights."""
    return meta_from_payload(Path(path), read_payload(Path(path)))


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_payload(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: permission denied (the serving user cannot read it)")
    from safetensors import SafetensorError, safe_open  # not needed to serve an ONNX export

    try:
        with safe_open(str(path), framework="numpy") as fh:
            metadata = fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupted?): {exc}") from exc
    return payload_from_tags(path, metadata, FORMAT, FORMAT_VERSION, "checkpoint")


def payload_from_tags(path: Path, tags: dict[str, str], fmt: str, max_version: int, kind: str) -> dict[str, Any]:
    """The metadata JSON object from a model file's string tags (``format``, ``format_version``,
    ``meta``: the safetensors header's, or an ONNX model's ``metadata_props``), checked: the format
    tag, a version this code reads, a JSON object. ``kind`` names the file in the errors."""
    if tags.get("format") != fmt:
        raise CheckpointError(f"{path}: not a vit-digits {kind} (no '{fmt}' format tag)")
    version = tags.get("format_version", "")
    if not version.isdigit() or int(version) > max_version:
        raise CheckpointError(
            f"{path}: {kind} format version {version!r} is not supported "
            f"(this code reads up to {max_version}); upgrade vit-digits"
        )
    try:
        payload = json.loads(tags["meta"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: {kind} metadata is missing or not JSON") from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: {kind} metadata is not a JSON object")
    return payload


def meta_from_payload(path: Path, payload: dict[str, Any]) -> CheckpointMeta:
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
    try:
        return CheckpointMeta(config, preprocess, labels, dict(payload.get("training", {})), calibration)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
