"""What the OpenAPI document says beyond what FastAPI sees in the routes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.errors import UNAUTHORIZED

API_KEY_SCHEME = {"type": "apiKey", "in": "header", "name": "X-API-Key"}


def document_api(app: FastAPI, api_key: bool, max_batch_files: int) -> None:
    """Make the OpenAPI schema say what the server does where FastAPI cannot see it: the
    ``X-API-Key`` scheme and its 401 on every ``/v1/`` operation, only if the server has a key (the
    check itself is :class:`app.middleware.ApiKeyMiddleware`); the batch endpoint's most files."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            batch = schema["paths"]["/v1/predict/batch"]["post"]["requestBody"]["content"]["multipart/form-data"]
            batch["schema"]["properties"]["files"]["maxItems"] = max_batch_files
            if api_key:
                schema.setdefault("components", {}).setdefault("securitySchemes", {})["APIKeyHeader"] = API_KEY_SCHEME
                for path, operations in schema["paths"].items():
                    if path.startswith("/v1/"):
                        for operation in operations.values():
                            operation["security"] = [{"APIKeyHeader": []}]
                            operation["responses"]["401"] = UNAUTHORIZED
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
