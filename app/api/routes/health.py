"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.errors import NOT_READY, NOT_READY_HEADERS, error_response

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (it may still be loading models)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: NOT_READY})
async def readyz(request: Request) -> Response:
    """200 once every model is loaded and warmed up; 503 with the reason before that."""
    state = request.app.state
    if state.registry is None:
        return error_response(503, "not_ready", state.status, headers=NOT_READY_HEADERS)
    return Response('{"status":"ready"}', media_type="application/json")


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus exposition: requests, latency, batch sizes, queue depth, inference time."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
