"""POST /v1/predict and /v1/predict/batch."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from app.api.images import infer, prediction, preprocess
from app.deps import ModelDep, SettingsDep
from app.errors import ERROR_RESPONSES, ApiError
from app.schemas import BatchItemError, BatchItemOut, BatchOut, PredictionOut
from app.uploads import IMAGE_TYPES, read_batch_images, read_single_image

router = APIRouter(tags=["predict"])
TopKQuery = Annotated[int, Query(ge=1, le=10, description="how many of the most probable digits to list")]

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
async def predict(request: Request, served: ModelDep, settings: SettingsDep, top_k: TopKQuery = 3) -> PredictionOut:
    """Classify one digit image."""
    start = time.perf_counter()
    prepared = await preprocess(await read_single_image(request), served, settings)
    result = await infer(served.predict, prepared, settings)
    return prediction(result.probabilities, served, prepared, top_k, (time.perf_counter() - start) * 1000)


@router.post("/predict/batch", response_model=BatchOut, responses=ERROR_RESPONSES, openapi_extra=BATCH_BODY)
async def predict_batch(request: Request, served: ModelDep, settings: SettingsDep, top_k: TopKQuery = 3) -> BatchOut:
    """Classify many images; a bad image gets its own error entry, the others their answers."""
    start = time.perf_counter()
    files = await read_batch_images(request, settings.max_batch_files)

    async def one(index: int, name: str, data: bytes) -> BatchItemOut:
        try:
            prepared = await preprocess(data, served, settings)
            result = await infer(served.predict, prepared, settings)
        except ApiError as exc:
            return BatchItemOut(index=index, filename=name, error=BatchItemError(code=exc.code, message=exc.message))
        pred = prediction(result.probabilities, served, prepared, top_k, (time.perf_counter() - start) * 1000)
        return BatchItemOut(index=index, filename=name, prediction=pred)

    results = await asyncio.gather(*(one(i, name, data) for i, (name, data) in enumerate(files)))
    return BatchOut(
        results=list(results), model_id=served.id, latency_ms=round((time.perf_counter() - start) * 1000, 3)
    )
