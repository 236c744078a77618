"""What the routes take from ``app.state``: the settings, the loaded models, the decoder processes.

Plain functions the routes call rather than FastAPI dependencies, whose graph FastAPI solves on
every request: as ``Depends`` the three cost /v1/predict 11% of its req/s at concurrency 1 and 27%
at 32 (docs/PERFORMANCE.md, 7 Dec 2026).
"""

from __future__ import annotations

from fastapi import Request

from app.api.oip import model_version
from app.decoding import Decoder
from app.errors import NOT_READY_HEADERS, ApiError, clip
from app.registry import Registry, ServedModel
from app.settings import Settings


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def registry_of(request: Request) -> Registry:
    """The loaded models; 503 ``not_ready`` while they are still loading (or failed to)."""
    registry: Registry | None = request.app.state.registry
    if registry is None:
        raise ApiError(503, "not_ready", request.app.state.status, headers=NOT_READY_HEADERS)
    return registry


def model_of(request: Request, model_id: str | None) -> ServedModel:
    """The model ``?model=`` names, or the default; 404 ``model_not_found`` for an unknown id."""
    registry = registry_of(request)
    served = registry.get(model_id)
    if served is None:
        raise ApiError(404, "model_not_found", f"no model {model_id!r}; loaded: {', '.join(registry.models)}")
    return served


def decoding_of(request: Request) -> Decoder:
    """How this server decodes uploads: its decoder processes and their limits."""
    decoder: Decoder = request.app.state.decoding
    return decoder


def oip_model_of(request: Request, name: str, version: str | None) -> ServedModel:
    """The model a ``/v2`` path names (its id; there is no default), at ``version`` if the path gives one;
    404 ``model_not_found`` for any other."""
    registry = registry_of(request)
    served = registry.models.get(name)
    if served is None:
        raise ApiError(404, "model_not_found", f"no model {clip(name)!r}; served: {', '.join(registry.models)}")
    if version is not None and version != model_version(served):
        message = f"model {served.id!r} has no version {clip(version)!r}; served: {model_version(served)}"
        raise ApiError(404, "model_not_found", message)
    return served
