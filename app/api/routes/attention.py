"""POST /v1/attention: the prediction with attention maps, as JSON or a heatmap PNG."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.images import classify_upload, prediction
from app.api.routes.predict import SINGLE_IMAGE_BODY, RejectQuery, TopKQuery
from app.deps import ModelQuery, model_of
from app.errors import ERROR_RESPONSES
from app.render import heatmap_png
from app.schemas import AttentionOut, LayerAttention

router = APIRouter(tags=["attention"])

PNG_RESPONSE: dict[int | str, dict[str, object]] = {
    200: {
        "content": {"image/png": {}},
        "description": "JSON by default; with ?format=png a heatmap image, whose X-Is-Digit (true|false) and "
        "X-Digit-Score headers carry the verdict",
    }
}


def _rounded(grid: list[list[float]]) -> list[list[float]]:
    return [[round(v, 5) for v in row] for row in grid]


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
    served = model_of(request, model)
    prepared, result = await classify_upload(request, served, served.attention, reject)
    if fmt == "png":
        heat = result.rollout if which == "rollout" else result.cls_attention
        png = await run_in_threadpool(heatmap_png, prepared.pixels, heat)
        verdict = {"X-Is-Digit": str(result.is_digit).lower(), "X-Digit-Score": f"{result.digit_score:.5f}"}
        return Response(png, media_type="image/png", headers=verdict)
    base = prediction(result, served, prepared, top_k, 0.0)
    per_layer = None
    if layers == "all":
        per_layer = [
            LayerAttention(layer=i, heads=[_rounded(h.tolist()) for h in heads])
            for i, heads in enumerate(result.layers)
        ]
    out = AttentionOut(
        **base.model_dump(exclude={"latency_ms"}),
        grid=int(result.rollout.shape[-1]),
        input=_rounded(prepared.pixels.tolist()),
        rollout=_rounded(result.rollout.tolist()),
        cls_attention=_rounded(result.cls_attention.tolist()),
        layers=per_layer,
        latency_ms=round((time.perf_counter() - start) * 1000, 3),
    )
    return out
