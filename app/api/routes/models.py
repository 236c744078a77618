"""GET /v1/models: what is loaded."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.state import registry_of
from app.errors import NOT_READY
from app.schemas import ModelOut, ModelsOut

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ModelsOut, responses={503: NOT_READY})
async def list_models(request: Request) -> ModelsOut:
    """Loaded models: architecture, parameters, test accuracy, training date, checkpoint sha256."""
    registry = registry_of(request)
    models = [
        ModelOut(**served.info(default=model_id == registry.default_id)) for model_id, served in registry.models.items()
    ]
    return ModelsOut(models=models, default=registry.default_id)
