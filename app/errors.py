"""One JSON error shape for each protocol the API speaks: ``{"error": {"code", "message", "request_id"}}``
under ``/v1`` (and everywhere else), ``{"error": "code: message"}`` under ``/v2``, as the Open Inference
Protocol has it (the request id is in the ``X-Request-ID`` header there)."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Send

from app.logs import request_id_var
from app.pipeline import PipelineError

log = logging.getLogger(__name__)
CLIENT_CLOSED = 499  # nginx's status for a client that closed the connection before the answer
# The HTTP status of each code of app.pipeline.PipelineError (an unknown one is 400), and the
# headers that go with it.
PIPELINE_STATUS = {
    "empty_image": 400,
    "invalid_image": 400,
    "unsupported_format": 415,
    "image_too_large": 413,
    "no_digit": 422,
    "not_a_digit": 422,
    "queue_full": 503,
    "inference_timeout": 504,
}
# Retry-After seconds: a full queue drains within a batch window or two; loading a model takes longer.
RETRY_FULL_QUEUE_S, RETRY_NOT_READY_S = 1, 2
PIPELINE_HEADERS = {"queue_full": {"Retry-After": str(RETRY_FULL_QUEUE_S)}}
NOT_READY_HEADERS = {"Retry-After": str(RETRY_NOT_READY_S)}
# The Open Inference Protocol answers a request it cannot serve with 400, or 503 when the server cannot
# take it now; a missed deadline is 504 there too, so that a caller's retry policy tells it from a bad input.
OIP_PREFIX = "/v2"
OIP_PIPELINE_STATUS = {"queue_full": 503, "inference_timeout": 504}


class ApiError(Exception):
    """An error a client can act on: HTTP status, machine-readable code, human message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def clip(text: str, limit: int = 64) -> str:
    """``text`` cut to ``limit`` characters (marked with "..."): how much of a client's input an
    answer echoes back."""
    return text if len(text) <= limit else text[:limit] + "..."


def speaks_oip(path: str) -> bool:
    """Whether ``path`` is one of the Open Inference Protocol's routes (``/v2``)."""
    return path == OIP_PREFIX or path.startswith(OIP_PREFIX + "/")


def error_body(code: str, message: str, path: str = "") -> dict[str, object]:
    """The error in the shape of the protocol ``path`` speaks."""
    if speaks_oip(path):
        return {"error": f"{code}: {message}"}
    return {"error": {"code": code, "message": message, "request_id": request_id_var.get()}}


async def send_error(
    send: Send, status: int, code: str, message: str, headers: dict[str, str] | None = None, path: str = ""
) -> None:
    """The error as a raw ASGI response, for middleware that answers before the app runs."""
    payload = json.dumps(error_body(code, message, path)).encode()
    extra = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, path: str = ""
) -> JSONResponse:
    return JSONResponse(error_body(code, message, path), status_code=status, headers=headers)


def internal_error_response(path: str = "") -> JSONResponse:
    """The answer to an exception nothing handled (app.middleware sends it, with the request's id), in
    the shape of the protocol ``path`` speaks."""
    return error_response(500, "internal_error", "an unexpected error occurred; it has been logged", path=path)


def documented(code: str, text: str) -> dict[str, object]:
    """An error response as the OpenAPI schema shows it."""
    example = {"error": {"code": code, "message": text, "request_id": "3f2a…"}}
    return {"description": text, "content": {"application/json": {"example": example}}}


NOT_READY = documented("not_ready", "the models are still loading (or failed to); retry after Retry-After")
UNAUTHORIZED = documented("unauthorized", "missing or wrong X-API-Key header (only when the server has a key)")
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: documented(code, text)
    for status, code, text in [
        (400, "invalid_image", "the image data is truncated or corrupt"),
        (404, "model_not_found", "no model 'x'; loaded: vit-digits"),
        (413, "payload_too_large", "the request body exceeds 5000000 bytes"),
        (415, "unsupported_media_type", "send multipart/form-data or an image/* body"),
        (
            422,
            "no_digit",
            "no digit found: the image is blank or has no contrast (with ?reject=true also "
            "not_a_digit: the picture does not look like a digit)",
        ),
        (503, "queue_full", "the server is at capacity, or not ready yet; retry after the Retry-After seconds"),
        (504, "inference_timeout", "not answered within the deadline of 10 s"),
    ]
}


OIP_ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def oip_documented(code: str, text: str) -> dict[str, object]:
    """An error of the Open Inference Protocol's routes as the OpenAPI schema shows it."""
    example = {"error": f"{code}: {text}"}
    return {"description": text, "content": {"application/json": {"schema": OIP_ERROR_SCHEMA, "example": example}}}


OIP_NOT_READY = oip_documented("not_ready", "the models are still loading (or failed to); retry after Retry-After")
OIP_UNAUTHORIZED = oip_documented("unauthorized", "missing or wrong X-API-Key header (only when the server has a key)")
OIP_MODEL_NOT_FOUND = oip_documented("model_not_found", "no model 'x' (or no version 'y' of it); served: vit-digits")
OIP_INFER_ERRORS: dict[int | str, dict[str, object]] = {
    400: oip_documented("invalid_image", "picture 3: the image data is truncated or corrupt (or any bad request)"),
    404: OIP_MODEL_NOT_FOUND,
    413: oip_documented("payload_too_large", "the request body exceeds the limit of 5000000 bytes"),
    415: oip_documented("unsupported_media_type", "send application/json or application/octet-stream"),
    503: oip_documented("queue_full", "the server is at capacity, or not ready yet; retry after Retry-After"),
    504: oip_documented("inference_timeout", "not answered within the deadline of 10 s"),
}


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as the JSON shape of the protocol its path speaks; nothing leaks a stack trace
    (the 500 is answered in app.middleware)."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers, request.scope["path"])

    @app.exception_handler(PipelineError)
    async def _pipeline_error(request: Request, exc: PipelineError) -> JSONResponse:
        path = request.scope["path"]
        statuses = OIP_PIPELINE_STATUS if speaks_oip(path) else PIPELINE_STATUS
        return error_response(statuses.get(exc.code, 400), exc.code, exc.message, PIPELINE_HEADERS.get(exc.code), path)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = getattr(exc, "headers", None)
        return error_response(exc.status_code, code, str(exc.detail), headers, request.scope["path"])

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        path = request.scope["path"]
        status = 400 if speaks_oip(path) else 422
        return error_response(status, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}", path=path)

    @app.exception_handler(ClientDisconnect)
    async def _client_disconnected(request: Request, _: ClientDisconnect) -> Response:
        # Nobody is left to read an answer; this one only gives the metrics and access log a status.
        log.info("client disconnected before its request was read", extra={"path": request.url.path})
        return Response(status_code=CLIENT_CLOSED)

    # Any other exception is answered by app.middleware.RequestContextMiddleware: a handler for
    # Exception here would run in starlette's outermost layer, outside that middleware, and its 500
    # would leave without the request's id and the security headers.
