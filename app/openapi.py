"""What the OpenAPI document says beyond what FastAPI sees in the routes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.errors import OIP_UNAUTHORIZED, UNAUTHORIZED, speaks_oip
from app.middleware import needs_key
from app.schemas import OipInferRequest

API_KEY_SCHEME = {"type": "apiKey", "in": "header", "name": "X-API-Key"}


def document_api(app: FastAPI, api_key: bool, max_batch_files: int) -> None:
    """Make the OpenAPI schema say what the server does where FastAPI cannot see it: the
    ``X-API-Key`` scheme and its 401 on every operation that needs it, only if the server has a key
    (the check itself is :class:`app.middleware.ApiKeyMiddleware`); the batch endpoint's most files;
    the Open Inference Protocol's infer request, read by hand (:mod:`app.api.tensors`)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            batch = schema["paths"]["/v1/predict/batch"]["post"]["requestBody"]["content"]["multipart/form-data"]
            batch["schema"]["properties"]["files"]["maxItems"] = max_batch_files
            schema.setdefault("components", {}).setdefault("schemas", {}).update(_infer_request_schemas())
            for path, operations in schema["paths"].items():
                if speaks_oip(path):  # FastAPI documents a 422 for every path parameter; /v2 answers 400
                    for operation in operations.values():
                        operation["responses"].pop("422", None)
            if api_key:
                schema["components"].setdefault("securitySchemes", {})["APIKeyHeader"] = API_KEY_SCHEME
                for path, operations in schema["paths"].items():
                    if needs_key(path):
                        for operation in operations.values():
                            operation["security"] = [{"APIKeyHeader": []}]
                            operation["responses"]["401"] = OIP_UNAUTHORIZED if speaks_oip(path) else UNAUTHORIZED
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _infer_request_schemas() -> dict[str, Any]:
    """The JSON schemas of the Open Inference Protocol's infer request, by name, for the components."""
    top = OipInferRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    return {**top.pop("$defs", {}), OipInferRequest.__name__: top}
