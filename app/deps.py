"""What the routes take from the app's state: settings, the registry, the requested model.

These are plain functions the routes call, not FastAPI dependencies. FastAPI solves a route's
dependency graph on every request, and with the four this service had (settings, registry, model,
API key) that was the largest single cost of a ``/v1/predict`` request on the event loop: 22% of the
loop's Python time in a py-spy profile at concurrency 32. The query parameters stay FastAPI
parameters (validated and documented as usual); the API key is checked by
:class:`app.middleware.ApiKeyMiddleware` before a request reaches the router.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Annotated

from fastapi import Query, Request

from app.errors import ApiError
from app.registry import Registry, ServedModel
from app.settings import Settings

MODEL_ID_CHARS = 64
ModelQuery = Annotated[
    str | None,
    Query(max_length=MODEL_ID_CHARS, description="model id from /v1/models; the default if omitted"),
]


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def registry_of(request: Request) -> Registry:
    """The loaded models; 503 ``not_ready`` while they are still loading (or failed to)."""
    registry: Registry | None = request.app.state.registry
    if registry is None:
        raise ApiError(503, "not_ready", request.app.state.status, headers={"Retry-After": "2"})
    return registry


def model_of(request: Request, model_id: str | None) -> ServedModel:
    """The model ``?model=`` names, or the default; 404 ``model_not_found`` for an unknown id."""
    registry = registry_of(request)
    served = registry.get(model_id)
    if served is None:
        raise ApiError(404, "model_not_found", f"no model {model_id!r}; loaded: {', '.join(registry.models)}")
    return served


def decoder_of(request: Request) -> Executor:
    """The threads that decode and preprocess pictures too big for the event loop."""
    decoder: Executor = request.app.state.decoder
    return decoder
