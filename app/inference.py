"""Batched inference the batchers run: calibrated answers and attention maps, in NumPy.

A model is run through :class:`Runners`, two functions from a batch (B, C, S, S) of float32 inputs
to the logits, and to the logits with the attention maps. They come from one of two places, one
per device (:mod:`app.registry` chooses):

- the ONNX export of the checkpoint (:mod:`model.onnx_model`), run by ONNX Runtime: on CPU,
  without importing torch;
- the PyTorch checkpoint itself, run by torch (:mod:`app.torch_runtime`): on CUDA (and on CPU for
  a checkpoint without an export, with a warning).

Everything after the forward pass (softmax, calibration, the verdict, attention rollout) is the
same NumPy code whichever made the logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from model.meta import CheckpointMeta
from model.onnx_model import OnnxModel
from model.rollout import attention_rollout, cls_attention

Array = NDArray[np.float32]


@dataclass(frozen=True)
class Runners:
    """What runs a model: ``logits`` (B, classes) and ``logits_and_attention`` (plus the maps,
    (B, layers, heads, N, N)) for a batch (B, C, S, S); ``runtime`` names the engine, for /v1/models."""

    logits: Callable[[Array], Array]
    logits_and_attention: Callable[[Array], tuple[Array, Array]]
    runtime: str


@dataclass(frozen=True)
class Prediction:
    """Calibrated probabilities, the digit score and the verdict decided from it
    (:class:`model.calibration.Calibration` of the checkpoint)."""

    probabilities: list[float]
    digit_score: float
    is_digit: bool


@dataclass(frozen=True)
class AttentionResult(Prediction):
    rollout: Array  # (g, g), sums to 1
    cls_attention: Array  # (g, g), last layer, head mean
    layers: Array  # (layers, heads, g, g): each layer's and head's class-token attention


def _answers(logits: Array, meta: CheckpointMeta) -> tuple[list[list[float]], list[float], list[bool]]:
    """Per row: calibrated probabilities, digit score, verdict (as Python lists, for the responses)."""
    calibration = meta.calibration
    scores = calibration.scores(logits)
    return calibration.probabilities(logits).tolist(), scores.tolist(), calibration.is_digit(scores).tolist()


def predict_fn(runners: Runners, meta: CheckpointMeta) -> Callable[[Array], list[Prediction]]:
    """The batched prediction function for one model; ``x`` (B, C, S, S) as :func:`model.preprocess.prepare`
    makes it for the model's preprocessing (C = the model's input channels)."""

    def run(x: Array) -> list[Prediction]:
        logits = runners.logits(x)
        return [Prediction(*answer) for answer in zip(*_answers(logits, meta), strict=True)]

    return run


def attention_fn(runners: Runners, meta: CheckpointMeta) -> Callable[[Array], list[AttentionResult]]:
    """The batched attention function for one model: answers plus rollout and per-layer maps."""
    config = meta.config
    prefix = config.num_prefix_tokens

    def run(x: Array) -> list[AttentionResult]:
        logits, attn = runners.logits_and_attention(x)
        probs, scores, verdicts = _answers(logits, meta)
        rollout = attention_rollout(attn, prefix)
        layers = np.stack([cls_attention(attn, layer, prefix) for layer in range(attn.shape[1])], axis=1)
        return [
            AttentionResult(probs[i], scores[i], verdicts[i], rollout[i], layers[i, -1].mean(0), layers[i])
            for i in range(x.shape[0])
        ]

    return run


def onnx_runners(exported: OnnxModel) -> Runners:
    """Runners for a loaded ONNX export."""
    return Runners(exported.logits, exported.logits_and_attention, "onnxruntime")
