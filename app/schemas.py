"""Response models: they define the OpenAPI schema at /docs."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr


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


# The Open Inference Protocol (KServe V2) under /v2: its request and response objects. The request's are
# strict (no unknown field, no string for a number), so that what the OpenAPI document allows and what
# the server accepts are one thing.
OipParameter = StrictBool | StrictInt | StrictFloat | StrictStr  # the protocol's $parameter
OipParameters = dict[str, OipParameter]
STRICT = ConfigDict(extra="forbid", strict=True)


class OipRequestInput(BaseModel):
    model_config = STRICT
    name: str = Field(description="`image` (BYTES [N]: encoded pictures) or `input` (FP32 [N,C,S,S]: normalised)")
    shape: list[Annotated[int, Field(ge=0)]]
    datatype: str = Field(examples=["BYTES"])
    parameters: OipParameters | None = Field(
        None,
        description="`binary_data_size`: the tensor's bytes follow the JSON header (Triton's binary extension); "
        '`content_type: "base64"`: JSON BYTES elements are base64',
    )
    data: list[OipParameter] | None = Field(None, description="the elements, flat, in row-major order, if in JSON")


class OipRequestOutput(BaseModel):
    model_config = STRICT
    name: str = Field(description="probabilities, digit, is_digit, digit_score or attention")
    parameters: OipParameters | None = Field(None, description="`binary_data: true`: the data after the JSON")


class OipInferRequest(BaseModel):
    model_config = STRICT
    id: str | None = None
    parameters: OipParameters | None = Field(
        None,
        description="`binary_data_output`: every output in binary; `reject`: a non-digit is an error (default: "
        "the server's VIT_DIGITS_REJECT_NON_DIGITS); `timeout`: a deadline in microseconds, if shorter than "
        "the server's",
    )
    inputs: list[OipRequestInput] = Field(min_length=1)
    outputs: list[OipRequestOutput] | None = Field(None, description="the outputs to return; all but attention if none")


class OipResponseOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: OipParameters | None = None
    data: list[Any] | None = None


class OipInferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[OipResponseOutput]


class OipTensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any size (the batch)")
    parameters: OipParameters | None = None


class OipModelMetadata(BaseModel):
    name: str = Field(examples=["vit-digits"])
    versions: list[str] = Field(description="one: the first 12 hex digits of the checkpoint's sha256")
    platform: str = Field(examples=["onnxruntime_onnx"])
    inputs: list[OipTensorMetadata]
    outputs: list[OipTensorMetadata]
    parameters: OipParameters | None = None


class OipServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class OipLive(BaseModel):
    live: bool


class OipReady(BaseModel):
    ready: bool
