"""POST /v1/predict and /v1/predict/batch."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from app.api.images import (
    Deadline,
    classify_upload,
    infer,
    json_response,
    not_a_digit,
    prediction,
    preprocess,
    queue_full,
    rejects,
)
from app.batcher import QueueFullError
from app.deps import ModelQuery, decoder_of, model_of, settings_of
from app.errors import ERROR_RESPONSES, ApiError
from app.inference import Prediction
from app.registry import ServedModel
from app.schemas import BatchItemError, BatchItemOut, BatchOut, PredictionOut
from app.settings import Settings
from app.uploads import IMAGE_TYPES, read_batch_images
from model.preprocess import Prepared

router = APIRouter(tags=["predict"])
TopKQuery = Annotated[int, Query(ge=1, le=10, description="how many of the most probable digits to list")]
RejectQuery = Annotated[
    bool | None,
    Query(
        description="true: a picture that is not a digit (is_digit false) gets 422 not_a_digit (in a batch: its "
        "own error entry) instead of a prediction; default: the server's VIT_DIGITS_REJECT_NON_DIGITS"
    ),
]

SINGLE_IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "one image: a multipart field `file`, or the raw bytes with an image content type",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "additionalProperties": False,
                }
            },
            **{media: {"schema": {"type": "string", "format": "binary"}} for media in IMAGE_TYPES},
        },
    }
}
BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}}
                    },
                    "additionalProperties": False,
                }
            }
        },
    }
}


@router.post("/predict", response_model=PredictionOut, responses=ERROR_RESPONSES, openapi_extra=SINGLE_IMAGE_BODY)
async def predict(
    request: Request, top_k: TopKQuery = 3, model: ModelQuery = None, reject: RejectQuery = None
) -> Response:
    """Classify one digit image; say whether it is a digit at all."""
    start = time.perf_counter()
    served = model_of(request, model)
    prepared, result = await classify_upload(request, served, served.predict, reject)
    latency_ms = (time.perf_counter() - start) * 1000
    return json_response(prediction(result, served, prepared, top_k, latency_ms))


@router.post("/predict/batch", response_model=BatchOut, responses=ERROR_RESPONSES, openapi_extra=BATCH_BODY)
async def predict_batch(
    request: Request, top_k: TopKQuery = 3, model: ModelQuery = None, reject: RejectQuery = None
) -> Response:
    """Classify many images; a bad or late image (or, with reject, a non-digit) gets its own error entry, the
    others their answers."""
    start = time.perf_counter()
    served, settings = model_of(request, model), settings_of(request)
    files = await read_batch_images(request, settings.max_batch_files)
    if served.predict.room() < len(files):
        raise queue_full(QueueFullError(f"room for {served.predict.room()} more images"))
    deadline = Deadline.start(settings.request_timeout_s)
    decoder = decoder_of(request)
    answers = await asyncio.gather(*(_one(data, served, settings, decoder, deadline) for _, data in files))
    latency_ms = (time.perf_counter() - start) * 1000
    reject_non_digits = rejects(reject, settings)
    results = []
    for index, ((name, _), answer) in enumerate(zip(files, answers, strict=True)):
        if not isinstance(answer, ApiError) and not answer[1].is_digit and reject_non_digits:
            answer = not_a_digit(answer[1], served)
        if isinstance(answer, ApiError):
            error = BatchItemError(code=answer.code, message=answer.message)
            results.append(BatchItemOut(index=index, filename=name, error=error))
        else:
            pred = prediction(answer[1], served, answer[0], top_k, latency_ms)
            results.append(BatchItemOut(index=index, filename=name, prediction=pred))
    return json_response(BatchOut(results=results, model_id=served.id, latency_ms=round(latency_ms, 3)))


async def _one(
    data: bytes, served: ServedModel, settings: Settings, decoder: Executor, deadline: Deadline
) -> tuple[Prepared, Prediction] | ApiError:
    """One image of a batch request, preprocessed and classified on its own (its inference is
    batched with the others' by the batcher); its error, if any, is its own."""
    try:
        prepared = await preprocess(data, served, settings, decoder, deadline)
        return prepared, await infer(served.predict, prepared, deadline)
    except ApiError as exc:
        return exc
