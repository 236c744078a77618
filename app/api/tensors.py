"""The Open Inference Protocol's infer bodies: a request read into plain values, the answers written
back as output tensors.

A request is a JSON header, optionally followed by the tensors' bytes (Triton's binary tensor data
extension): the ``Inference-Header-Content-Length`` header says where the JSON ends, and each
tensor sent that way has a ``binary_data_size`` parameter instead of ``data``, in the order of the
inputs. A BYTES tensor in binary is its elements, each a 4-byte little-endian length and the bytes;
numbers are little-endian. An output goes back the same way when its ``binary_data`` parameter (or
the request's ``binary_data_output``) says so.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Response
from pydantic import ValidationError

from app.errors import ApiError, clip
from app.inference import AttentionResult, Prediction
from app.schemas import (
    OipInferRequest,
    OipInferResponse,
    OipParameter,
    OipParameters,
    OipRequestInput,
    OipResponseOutput,
)

IMAGE, INPUT, ATTENTION = "image", "input", "attention"
OUTPUT_TYPES = {
    "probabilities": "FP32",
    "digit": "INT64",
    "is_digit": "BOOL",
    "digit_score": "FP32",
    ATTENTION: "FP32",
}
DEFAULT_OUTPUTS = ("probabilities", "digit", "is_digit", "digit_score")
NUMPY_TYPES = {"FP32": "<f4", "INT64": "<i8", "BOOL": "?"}
HEADER_LENGTH = "inference-header-content-length"
BINARY_MEDIA = "application/octet-stream"
MEDIA_TYPES = ("", "application/json", BINARY_MEDIA)  # tritonclient's sync client sends none

INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "an inference request; with Triton's binary tensor data extension the JSON is followed by "
        "the tensors' bytes, its length in the Inference-Header-Content-Length header",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/OipInferRequest"}},
            BINARY_MEDIA: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
INFER_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the outputs; with binary outputs the JSON is followed by their bytes (application/"
        "octet-stream, the JSON's length in the Inference-Header-Content-Length header)",
        "content": {BINARY_MEDIA: {"schema": {"type": "string", "format": "binary"}}},
    }
}


@dataclass(frozen=True)
class TensorLimits:
    """What a model takes: at most ``max_batch`` pictures or inputs a request, inputs of ``input_shape`` (C, S, S)."""

    max_batch: int
    input_shape: tuple[int, int, int]


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferCall:
    """An infer request read into plain values: ``pictures`` (encoded) or ``inputs`` ((N, C, S, S), normalised)."""

    id: str | None
    pictures: list[bytes] | None
    inputs: np.ndarray | None
    outputs: tuple[RequestedOutput, ...]
    reject: bool | None  # None: the server's default
    timeout_s: float | None  # the caller's deadline, if it set one

    def wants(self, name: str) -> bool:
        return any(output.name == name for output in self.outputs)


# A caller's timeout beyond a day is no deadline (and 1e400 would overflow the conversion to seconds).
MAX_TIMEOUT_US = 86_400e6
# Inference-Header-Content-Length: a length within the body cap has at most this many digits.
MAX_LENGTH_DIGITS = 12
# Normalised pixels lie within a few units of 0; far larger values overflow the model's FP32
# arithmetic into NaN answers.
MAX_INPUT = 1e4


def bad_request(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def read_infer_request(body: bytes, headers: Mapping[str, str], limits: TensorLimits) -> InferCall:
    """The infer request in ``body`` (with its HTTP ``headers``), checked against ``limits``.

    Raises:
        ApiError: 415 for a content type or encoding other than JSON or binary; 400 for anything
            else the request gets wrong (the message says what).
    """
    media = headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in MEDIA_TYPES or headers.get("content-encoding", "identity") != "identity":
        raise ApiError(415, "unsupported_media_type", f"send {' or '.join(MEDIA_TYPES[1:])}, uncompressed")
    header, binary = _split_body(body, headers.get(HEADER_LENGTH))
    try:
        request = OipInferRequest.model_validate_json(header)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise bad_request(f"{clip('.'.join(map(str, first['loc']))) or 'body'}: {first['msg']}") from None
    if len(request.inputs) != 1:
        raise bad_request(f"send one input tensor, {IMAGE!r} or {INPUT!r}; got {len(request.inputs)}")
    (tensor,) = request.inputs
    (raw,) = _binary_parts(request.inputs, binary)
    parameters = request.parameters or {}
    call_timeout = _number(parameters, "timeout")
    if call_timeout is not None and not 0 < call_timeout < MAX_TIMEOUT_US:
        raise bad_request(f"parameter 'timeout' must be a positive number of microseconds below {MAX_TIMEOUT_US:.0e}")
    return InferCall(
        id=request.id,
        pictures=_pictures(tensor, raw, limits) if tensor.name == IMAGE else None,
        inputs=_inputs(tensor, raw, limits) if tensor.name != IMAGE else None,
        outputs=_requested_outputs(request, bool(_flag(parameters, "binary_data_output"))),
        reject=_flag(parameters, "reject"),
        timeout_s=None if call_timeout is None else call_timeout / 1e6,
    )


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary data after it."""
    if header_length is None:
        return body, b""
    digits = header_length.isascii() and header_length.isdigit() and len(header_length) <= MAX_LENGTH_DIGITS
    if not digits or int(header_length) > len(body):
        raise bad_request(f"Inference-Header-Content-Length {clip(header_length)!r} is not a length within the body")
    return body[: int(header_length)], body[int(header_length) :]


def _binary_parts(inputs: Sequence[OipRequestInput], binary: bytes) -> list[bytes | None]:
    """Each input's bytes from the binary data, in order (None: its data is in the JSON)."""
    parts: list[bytes | None] = []
    offset = 0
    for tensor in inputs:
        parameters = tensor.parameters or {}
        if any(key.startswith("shared_memory") for key in parameters):
            raise bad_request("shared memory is not supported: send the data in JSON or binary")
        size = parameters.get("binary_data_size")
        if size is None:
            parts.append(None)
            continue
        if type(size) is not int or size < 0 or offset + size > len(binary):
            raise bad_request(f"input {clip(tensor.name)!r}: binary_data_size {size!r} does not fit the binary data")
        parts.append(binary[offset : offset + size])
        offset += size
    if offset != len(binary):
        raise bad_request(f"{len(binary) - offset} bytes after the JSON header belong to no input")
    return parts


def _check_tensor(tensor: OipRequestInput, raw: bytes | None, datatype: str, rank: int, limits: TensorLimits) -> int:
    """The batch size of ``tensor``, checked: its datatype, rank and size; data in exactly one place."""
    wanted = "[N]" if rank == 1 else f"[N, {', '.join(map(str, limits.input_shape))}]"
    if tensor.datatype != datatype or len(tensor.shape) != rank:
        shape = clip(f"{tensor.datatype} {tensor.shape}")
        raise bad_request(f"input {clip(tensor.name)!r} must be {datatype} {wanted}, not {shape}")
    if rank > 1 and tuple(tensor.shape[1:]) != limits.input_shape:
        raise bad_request(f"input {clip(tensor.name)!r} must be {datatype} {wanted}, not {clip(str(tensor.shape))}")
    count = tensor.shape[0]
    if not 1 <= count <= limits.max_batch:
        raise bad_request(
            f"input {clip(tensor.name)!r}: between 1 and {limits.max_batch} per request, not {clip(str(count))}"
        )
    if raw is not None and tensor.data is not None:
        raise bad_request(f"input {clip(tensor.name)!r}: data in JSON and in binary; send it in one place")
    return count


def _pictures(tensor: OipRequestInput, raw: bytes | None, limits: TensorLimits) -> list[bytes]:
    """The encoded pictures of the BYTES [N] input ``image``."""
    count = _check_tensor(tensor, raw, "BYTES", 1, limits)
    pictures = _bytes_elements(raw) if raw is not None else _json_bytes(tensor)
    if len(pictures) != count:
        raise bad_request(f"input {IMAGE!r} has shape [{count}] but {len(pictures)} elements")
    return pictures


def _bytes_elements(raw: bytes) -> list[bytes]:
    """BYTES elements in binary: each a 4-byte little-endian length, then that many bytes."""
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise bad_request("BYTES data ends inside an element's 4-byte length")
        size = int.from_bytes(raw[offset : offset + 4], "little")
        if offset + 4 + size > len(raw):
            raise bad_request(f"BYTES element {len(elements)} says {size} bytes; fewer follow")
        elements.append(raw[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return elements


def _json_bytes(tensor: OipRequestInput) -> list[bytes]:
    """BYTES elements in JSON: strings, their UTF-8 bytes, or base64 with ``content_type: base64``."""
    data = [item for item in _data(tensor) if isinstance(item, str)]
    if len(data) != len(_data(tensor)):
        raise bad_request(f"input {IMAGE!r}: JSON BYTES data must be a list of strings")
    content_type = (tensor.parameters or {}).get("content_type")
    if content_type is None:
        return [item.encode() for item in data]
    if content_type != "base64":
        raise bad_request(f"input {IMAGE!r}: content_type {clip(str(content_type))!r} is not base64")
    try:
        return [base64.b64decode(item, validate=True) for item in data]
    except (binascii.Error, ValueError) as exc:
        raise bad_request(f"input {IMAGE!r}: not base64: {exc}") from None


def _inputs(tensor: OipRequestInput, raw: bytes | None, limits: TensorLimits) -> np.ndarray:
    """The FP32 [N, C, S, S] input ``input``: already normalised model inputs, finite."""
    if tensor.name != INPUT:
        raise bad_request(f"unknown input {clip(tensor.name)!r}: send {IMAGE!r} (BYTES) or {INPUT!r} (FP32)")
    count = _check_tensor(tensor, raw, "FP32", 4, limits)
    shape = (count, *limits.input_shape)
    if raw is not None:
        if len(raw) != 4 * int(np.prod(shape)):
            raise bad_request(f"input {INPUT!r}: {len(raw)} bytes is not FP32 {list(shape)}")
        array = np.frombuffer(raw, dtype="<f4")
    else:
        array = _json_numbers(_data(tensor))
        if array.size != int(np.prod(shape)):
            raise bad_request(f"input {INPUT!r}: {array.size} numbers for shape {list(shape)}")
    with np.errstate(over="ignore"):  # beyond FP32's range becomes inf, refused below
        array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all() or float(np.abs(array).max()) > MAX_INPUT:
        raise bad_request(f"input {INPUT!r}: every value must be finite and within ±{MAX_INPUT:g}")
    return array.reshape(shape)


def _json_numbers(data: list[OipParameter]) -> np.ndarray:
    """JSON numbers as an array."""
    try:
        array = np.asarray(data)
    except OverflowError:  # an integer beyond 64 bits
        raise bad_request(f"input {INPUT!r}: data must be FP32 numbers") from None
    if array.dtype.kind not in "iuf":
        raise bad_request(f"input {INPUT!r}: data must be numbers")
    return array


def _data(tensor: OipRequestInput) -> list[OipParameter]:
    if tensor.data is None:
        raise bad_request(f"input {clip(tensor.name)!r} has neither data nor binary_data_size")
    return tensor.data


def _requested_outputs(request: OipInferRequest, binary_default: bool) -> tuple[RequestedOutput, ...]:
    """The outputs to return, in order, each in JSON or binary; all but attention if none are named."""
    if not request.outputs:
        return tuple(RequestedOutput(name, binary_default) for name in DEFAULT_OUTPUTS)
    outputs = []
    for output in request.outputs:
        parameters = output.parameters or {}
        if output.name not in OUTPUT_TYPES:
            raise bad_request(f"unknown output {clip(output.name)!r}; the outputs are {', '.join(OUTPUT_TYPES)}")
        if "classification" in parameters or any(key.startswith("shared_memory") for key in parameters):
            raise bad_request("the classification and shared-memory extensions are not supported")
        binary = _flag(parameters, "binary_data")
        outputs.append(RequestedOutput(output.name, binary_default if binary is None else binary))
    if len({output.name for output in outputs}) != len(outputs):
        raise bad_request("an output is named twice")
    return tuple(outputs)


def _flag(parameters: OipParameters, name: str) -> bool | None:
    value = parameters.get(name)
    if value is not None and not isinstance(value, bool):
        raise bad_request(f"parameter {name!r} must be true or false")
    return value


def _number(parameters: OipParameters, name: str) -> float | None:
    value = parameters.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise bad_request(f"parameter {name!r} must be a number")
    return value


def infer_response(call: InferCall, model: str, version: str, results: Sequence[Prediction]) -> Response:
    """The answers to ``call`` as the protocol's response: each requested output in JSON or binary."""
    outputs, chunks = [], []
    for wanted in call.outputs:
        array = output_array(wanted.name, results)
        shape = list(array.shape)
        datatype = OUTPUT_TYPES[wanted.name]
        if wanted.binary:
            data = array.astype(NUMPY_TYPES[datatype], copy=False).tobytes()
            chunks.append(data)
            parameters: OipParameters = {"binary_data_size": len(data)}
            outputs.append(
                OipResponseOutput.model_construct(
                    name=wanted.name, datatype=datatype, shape=shape, parameters=parameters
                )
            )
        else:
            outputs.append(
                OipResponseOutput.model_construct(
                    name=wanted.name, datatype=datatype, shape=shape, data=array.ravel().tolist()
                )
            )
    answer = OipInferResponse.model_construct(model_name=model, model_version=version, id=call.id, outputs=outputs)
    header = answer.model_dump_json(exclude_none=True).encode()
    if not chunks:
        return Response(header, media_type="application/json")
    return Response(header + b"".join(chunks), media_type=BINARY_MEDIA, headers={HEADER_LENGTH: str(len(header))})


def output_array(name: str, results: Sequence[Prediction]) -> np.ndarray:
    """Output ``name`` of a batch of answers: probabilities (N, 10), digit (N,), is_digit (N,),
    digit_score (N,), or attention (N, g, g), the attention rollout over the patch grid."""
    if name == ATTENTION:
        return np.stack([result.rollout for result in results if isinstance(result, AttentionResult)])
    if name == "is_digit":
        return np.array([result.is_digit for result in results], dtype=np.bool_)
    if name == "digit_score":
        return np.array([result.digit_score for result in results], dtype=np.float32)
    probabilities = np.array([result.probabilities for result in results], dtype=np.float32)
    return probabilities.argmax(axis=1).astype(np.int64) if name == "digit" else probabilities
