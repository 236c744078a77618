"""Response models: they define the OpenAPI schema at /docs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class TopK(BaseModel):
    label: str
    probability: float


class PredictionOut(BaseModel):
    digit: int = Field(description="the predicted digit (index of the most probable class)", examples=[7])
    label: str = Field(examples=["7"])
    confidence: float = Field(
        description="calibrated probability that the predicted digit is right, if the picture is a digit at all "
        "(see is_digit): among answers with confidence 0.9, about 90% are right",
        examples=[0.998],
    )
    probabilities: list[float] = Field(description="all ten calibrated class probabilities, in label order")
    is_digit: bool = Field(
        description="false: the picture does not look like a handwritten or typed digit (a letter, a symbol, a "
        "photo, noise...), so digit and confidence should not be acted on; decided as digit_score >= the model's "
        "threshold (GET /v1/models). With ?reject=true such a picture gets 422 not_a_digit instead",
        examples=[True],
    )
    digit_score: float = Field(
        description="how digit-like the picture is (higher: more), the score is_digit is decided from; its kind "
        "and threshold are the model's calibration in GET /v1/models (shown rounded to 5 decimals; is_digit "
        "compares the exact value)",
        examples=[9.81],
    )
    top_k: list[TopK]
    inverted: bool = Field(description="the image was dark ink on light paper and was inverted")
    model_id: str = Field(examples=["vit-digits"])
    sha256: str = Field(description="sha256 of the checkpoint file that answered")
    latency_ms: float = Field(description="server-side time for this request")


class BatchItemError(BaseModel):
    code: str
    message: str


class BatchItemOut(BaseModel):
    index: int
    filename: str
    prediction: PredictionOut | None = None
    error: BatchItemError | None = None


class BatchOut(BaseModel):
    results: list[BatchItemOut]
    model_id: str
    latency_ms: float


class LayerAttention(BaseModel):
    layer: int
    heads: list[list[list[float]]] = Field(description="per head: class-token attention on the patch grid")


class AttentionOut(PredictionOut):
    grid: int = Field(description="patches per side of the image", examples=[7])
    input: list[list[float]] = Field(description="the 28x28 digit the model saw, 0 (black) to 1 (white)")
    rollout: list[list[float]] = Field(description="attention rollout over the patch grid, sums to 1")
    cls_attention: list[list[float]] = Field(description="last layer's class-token attention, head mean")
    layers: list[LayerAttention] | None = Field(None, description="every layer and head, with ?layers=all")


class CalibrationOut(BaseModel):
    temperature: float = Field(description="the logits are divided by it before the softmax")
    score: str = Field(description="what digit_score is: energy (logsumexp of the logits), max_logit or msp")
    threshold: float | None = Field(
        description="is_digit = digit_score >= threshold; null: not fitted, every picture counts as a digit"
    )


class ModelOut(BaseModel):
    id: str
    default: bool
    architecture: str
    config: dict[str, Any]
    parameters: int
    patch_grid: int
    labels: list[str]
    test_accuracy: float | None
    trained_at: str | None
    sha256: str = Field(description="sha256 of the model's .safetensors checkpoint, whichever file is served")
    served_from: str = Field(
        description="the file the model runs from: its ONNX export on CPU, its checkpoint on CUDA or without export",
        examples=["vit-digits.onnx"],
    )
    device: str
    dtype: str
    runtime: str = Field(
        description="what runs the model: onnxruntime (its ONNX export, on CPU) or eager (its checkpoint, with torch)",
        examples=["onnxruntime"],
    )
    calibration: CalibrationOut


class ModelsOut(BaseModel):
    models: list[ModelOut]
    default: str
