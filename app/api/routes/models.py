"""GET /v1/models: what is loaded."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import RegistryDep
from app.schemas import ModelOut, ModelsOut

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ModelsOut)
async def list_models(registry: RegistryDep) -> ModelsOut:
    """Loaded models: architecture, parameters, test accuracy, training date, checkpoint sha256."""
    models = [
        ModelOut(**served.info(default=model_id == registry.default_id)) for model_id, served in registry.models.items()
    ]
    return ModelsOut(models=models, default=registry.default_id)
