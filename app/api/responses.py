"""The image routes' answers: the pipeline's results (:mod:`app.pipeline`) as response bodies."""

from __future__ import annotations

from fastapi import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from app.inference import AttentionResult, Prediction
from app.pipeline import PipelineError
from app.registry import ServedModel
from app.render import heatmap_png
from app.schemas import AttentionOut, BatchItemError, BatchItemOut, BatchOut, LayerAttention, PredictionOut, TopK
from model.preprocess import Prepared


def json_response(body: BaseModel) -> Response:
    """``body`` serialised once, by pydantic-core, straight to bytes.

    Returning a model from a route makes FastAPI validate it again against ``response_model`` and
    then encode it; the routes still declare ``response_model`` for the OpenAPI schema, but hand
    back the bytes of a model that was built valid (with ``Depends`` too, returning the model cost
    /v1/predict 24% of its req/s at concurrency 1: docs/PERFORMANCE.md, 7 Dec 2026).
    """
    return Response(body.model_dump_json(), media_type="application/json")


def prediction_out(
    result: Prediction, served: ServedModel, prepared: Prepared, top_k: int, latency_ms: float
) -> PredictionOut:
    probs = result.probabilities
    labels = served.meta.labels
    order = sorted(range(len(probs)), key=probs.__getitem__, reverse=True)
    best = order[0]
    return PredictionOut(
        digit=best,
        label=labels[best],
        confidence=round(probs[best], 6),
        probabilities=[round(p, 6) for p in probs],
        top_k=[TopK(label=labels[i], probability=round(probs[i], 6)) for i in order[:top_k]],
        is_digit=result.is_digit,
        digit_score=round(result.digit_score, 5),
        inverted=prepared.inverted,
        model_id=served.id,
        sha256=served.sha256,
        latency_ms=round(latency_ms, 3),
    )


def batch_out(
    names: list[str],
    answers: list[tuple[Prepared, Prediction] | PipelineError],
    served: ServedModel,
    top_k: int,
    latency_ms: float,
) -> BatchOut:
    """One entry per file, in order: its prediction, or its own error."""
    results = []
    for index, (name, answer) in enumerate(zip(names, answers, strict=True)):
        if isinstance(answer, PipelineError):
            error = BatchItemError(code=answer.code, message=answer.message)
            results.append(BatchItemOut(index=index, filename=name, error=error))
        else:
            prediction = prediction_out(answer[1], served, answer[0], top_k, latency_ms)
            results.append(BatchItemOut(index=index, filename=name, prediction=prediction))
    return BatchOut(results=results, model_id=served.id, latency_ms=round(latency_ms, 3))


def attention_out(
    result: AttentionResult, served: ServedModel, prepared: Prepared, top_k: int, all_layers: bool, latency_ms: float
) -> AttentionOut:
    """The prediction with the attention maps, rounded to 5 decimals; every layer's and head's too
    if ``all_layers``."""
    base, maps = prediction_out(result, served, prepared, top_k, latency_ms), result.layers
    per_layer = None
    if all_layers:
        per_layer = [LayerAttention(layer=i, heads=[_rounded(h.tolist()) for h in hs]) for i, hs in enumerate(maps)]
    return AttentionOut(
        **base.model_dump(),
        grid=int(result.rollout.shape[-1]),
        input=_rounded(prepared.pixels.tolist()),
        rollout=_rounded(result.rollout.tolist()),
        cls_attention=_rounded(result.cls_attention.tolist()),
        layers=per_layer,
    )


async def heatmap_response(result: AttentionResult, prepared: Prepared, which: str) -> Response:
    """The ``which`` map (``rollout`` or ``cls``) over the digit as a PNG, drawn off the event loop; the
    verdict in the X-Is-Digit and X-Digit-Score headers."""
    heat = result.rollout if which == "rollout" else result.cls_attention
    png = await run_in_threadpool(heatmap_png, prepared.pixels, heat)
    verdict = {"X-Is-Digit": str(result.is_digit).lower(), "X-Digit-Score": f"{result.digit_score:.5f}"}
    return Response(png, media_type="image/png", headers=verdict)


def _rounded(grid: list[list[float]]) -> list[list[float]]:
    return [[round(v, 5) for v in row] for row in grid]
