"""POST /v1/predict and /v1/predict/batch."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.images import (
    infer,
    infer_many,
    json_response,
    not_a_digit,
    prediction,
    preprocess,
    preprocess_many,
    rejects,
)
from app.deps import ModelQuery, model_of, settings_of
from app.errors import ERROR_RESPONSES
from app.schemas import BatchItemError, BatchItemOut, BatchOut, PredictionOut
from app.uploads import IMAGE_TYPES, read_batch_images, read_single_image
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
                    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
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
    served, settings = model_of(request, model), settings_of(request)
    prepared = await preprocess(await read_single_image(request), served, settings)
    result = await infer(served.predict, prepared, settings)
    if not result.is_digit and rejects(reject, settings):
        raise not_a_digit(result, served)
    latency_ms = (time.perf_counter() - start) * 1000
    return json_response(prediction(result, served, prepared, top_k, latency_ms))


@router.post("/predict/batch", response_model=BatchOut, responses=ERROR_RESPONSES, openapi_extra=BATCH_BODY)
async def predict_batch(
    request: Request, top_k: TopKQuery = 3, model: ModelQuery = None, reject: RejectQuery = None
) -> Response:
    """Classify many images; a bad image gets its own error entry, the others their answers."""
    start = time.perf_counter()
    served, settings = model_of(request, model), settings_of(request)
    files = await read_batch_images(request, settings.max_batch_files)
    prepared = await run_in_threadpool(preprocess_many, [data for _, data in files], served, settings)
    good = [p for p in prepared if isinstance(p, Prepared)]
    answers = iter(await infer_many(served.predict, good, settings))
    latency_ms = (time.perf_counter() - start) * 1000
    reject_non_digits = rejects(reject, settings)
    results = []
    for index, ((name, _), item) in enumerate(zip(files, prepared, strict=True)):
        if isinstance(item, Prepared):
            result = next(answers)
            if result.is_digit or not reject_non_digits:
                pred = prediction(result, served, item, top_k, latency_ms)
                results.append(BatchItemOut(index=index, filename=name, prediction=pred))
                continue
            item = not_a_digit(result, served)
        results.append(
            BatchItemOut(index=index, filename=name, error=BatchItemError(code=item.code, message=item.message))
        )
    return json_response(BatchOut(results=results, model_id=served.id, latency_ms=round(latency_ms, 3)))
