"""POST /v1/predict and /v1/predict/batch."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response

from app.api.params import ModelQuery, RejectQuery, TopKQuery, rejects
from app.api.responses import batch_out, json_response, prediction_out
from app.api.state import decoding_of, model_of, settings_of
from app.api.uploads import BATCH_BODY, SINGLE_IMAGE_BODY, read_batch_images, read_single_image
from app.errors import ERROR_RESPONSES
from app.pipeline import Deadline, classify, classify_each
from app.schemas import BatchOut, PredictionOut

router = APIRouter(tags=["predict"])


@router.post("/predict", response_model=PredictionOut, responses=ERROR_RESPONSES, openapi_extra=SINGLE_IMAGE_BODY)
async def predict(
    request: Request, top_k: TopKQuery = 3, model: ModelQuery = None, reject: RejectQuery = None
) -> Response:
    """Classify one digit image; say whether it is a digit at all."""
    start = time.perf_counter()
    served, settings, decoding = model_of(request, model), settings_of(request), decoding_of(request)
    data = await read_single_image(request)
    deadline = Deadline.start(settings.request_timeout_s)
    prepared, result = await classify(data, served, served.predict, decoding, deadline, rejects(reject, settings))
    latency_ms = (time.perf_counter() - start) * 1000
    return json_response(prediction_out(result, served, prepared, top_k, latency_ms))


@router.post("/predict/batch", response_model=BatchOut, responses=ERROR_RESPONSES, openapi_extra=BATCH_BODY)
async def predict_batch(
    request: Request, top_k: TopKQuery = 3, model: ModelQuery = None, reject: RejectQuery = None
) -> Response:
    """Classify many images; a bad or late image (or, with reject, a non-digit) gets its own error entry, the
    others their answers."""
    start = time.perf_counter()
    served, settings, decoding = model_of(request, model), settings_of(request), decoding_of(request)
    files = await read_batch_images(request, settings.max_batch_files)
    deadline = Deadline.start(settings.request_timeout_s)
    pictures = [data for _, data in files]
    answers = await classify_each(pictures, served, decoding, deadline, rejects(reject, settings))
    latency_ms = (time.perf_counter() - start) * 1000
    return json_response(batch_out([name for name, _ in files], answers, served, top_k, latency_ms))
