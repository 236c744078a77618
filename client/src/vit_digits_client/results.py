"""What the service answers, as typed values: :class:`Prediction`, :class:`Attention`, :class:`ModelInfo`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Grid = tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class TopK:
    label: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    """One picture's answer.

    ``confidence`` and ``probabilities`` are calibrated (of answers given with confidence 0.9, about
    90% are right), if the picture is a digit at all: act on ``digit`` only when ``is_digit``.
    ``digit_score`` is what ``is_digit`` is decided from (higher: more digit-like).
    """

    digit: int
    label: str
    confidence: float
    probabilities: tuple[float, ...]
    top_k: tuple[TopK, ...]
    is_digit: bool
    digit_score: float
    inverted: bool  # the picture was dark ink on light paper
    model_id: str
    sha256: str  # of the checkpoint that answered
    latency_ms: float  # the server's time

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Prediction:
        return cls(**_prediction_fields(body))


@dataclass(frozen=True)
class Attention(Prediction):
    """A prediction with where the model looked: attention maps over its ``grid`` x ``grid`` patches."""

    grid: int
    input: Grid  # the 28x28 digit the model saw, 0 (black) to 1 (white)
    rollout: Grid  # attention rollout, sums to 1
    cls_attention: Grid  # the last layer's class-token attention, head mean
    layers: tuple[tuple[Grid, ...], ...] | None = None  # [layer][head], if asked for

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Attention:
        layers = body.get("layers")
        return cls(
            **_prediction_fields(body),
            grid=int(body["grid"]),
            input=_grid(body["input"]),
            rollout=_grid(body["rollout"]),
            cls_attention=_grid(body["cls_attention"]),
            layers=None if layers is None else tuple(tuple(_grid(h) for h in layer["heads"]) for layer in layers),
        )


@dataclass(frozen=True)
class Calibration:
    temperature: float
    score: str  # what digit_score is: energy, max_logit or msp
    threshold: float | None  # is_digit = digit_score >= threshold; None: every picture counts as a digit


@dataclass(frozen=True)
class ModelInfo:
    """A served model, as ``GET /v1/models`` describes it."""

    id: str
    default: bool
    architecture: str
    parameters: int
    labels: tuple[str, ...]
    test_accuracy: float | None
    sha256: str
    runtime: str
    device: str
    calibration: Calibration
    config: Mapping[str, Any]

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ModelInfo:
        return cls(
            id=body["id"],
            default=bool(body["default"]),
            architecture=body["architecture"],
            parameters=int(body["parameters"]),
            labels=tuple(body["labels"]),
            test_accuracy=body.get("test_accuracy"),
            sha256=body["sha256"],
            runtime=body["runtime"],
            device=body["device"],
            calibration=Calibration(**body["calibration"]),
            config=dict(body["config"]),
        )


def _prediction_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "digit": int(body["digit"]),
        "label": str(body["label"]),
        "confidence": float(body["confidence"]),
        "probabilities": tuple(float(p) for p in body["probabilities"]),
        "top_k": tuple(TopK(str(t["label"]), float(t["probability"])) for t in body["top_k"]),
        "is_digit": bool(body["is_digit"]),
        "digit_score": float(body["digit_score"]),
        "inverted": bool(body["inverted"]),
        "model_id": str(body["model_id"]),
        "sha256": str(body["sha256"]),
        "latency_ms": float(body["latency_ms"]),
    }


def _grid(rows: list[list[float]]) -> Grid:
    return tuple(tuple(float(v) for v in row) for row in rows)
