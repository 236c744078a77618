"""POST /v1/attention: the prediction with attention maps, as JSON or a heatmap PNG."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from app.api.params import ModelQuery, RejectQuery, TopKQuery, rejects
from app.api.responses import attention_out, heatmap_response
from app.api.state import decoding_of, model_of, settings_of
from app.api.uploads import SINGLE_IMAGE_BODY, read_single_image
from app.errors import ERROR_RESPONSES
from app.pipeline import Deadline, classify
from app.schemas import AttentionOut

router = APIRouter(tags=["attention"])

PNG_RESPONSE: dict[int | str, dict[str, object]] = {
    200: {
        "content": {"image/png": {}},
        "description": "JSON by default; with ?format=png a heatmap image, whose X-Is-Digit (true|false) and "
        "X-Digit-Score headers carry the verdict",
    }
}


@router.post(
    "/attention", response_model=AttentionOut, responses=ERROR_RESPONSES | PNG_RESPONSE, openapi_extra=SINGLE_IMAGE_BODY
)
async def attention(
    request: Request,
    top_k: TopKQuery = 3,
    model: ModelQuery = None,
    layers: Annotated[Literal["none", "all"], Query(description="`all` adds every layer's and head's map")] = "none",
    fmt: Annotated[Literal["json", "png"], Query(alias="format", description="`png`: heatmap over the digit")] = "json",
    which: Annotated[Literal["rollout", "cls"], Query(alias="map", description="which map the PNG shows")] = "rollout",
    reject: RejectQuery = None,
) -> AttentionOut | Response:
    """Classify one digit and show where the model looked: attention rollout and CLS attention."""
    start = time.perf_counter()
    served, settings, decoding = model_of(request, model), settings_of(request), decoding_of(request)
    data = await read_single_image(request)
    deadline = Deadline.start(settings.request_timeout_s)
    prepared, result = await classify(data, served, served.attention, decoding, deadline, rejects(reject, settings))
    if fmt == "png":
        return await heatmap_response(result, prepared, which)
    latency_ms = (time.perf_counter() - start) * 1000
    return attention_out(result, served, prepared, top_k, layers == "all", latency_ms)
