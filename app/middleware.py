"""Pure-ASGI middleware (cheap per request): request ids, access logs and metrics; the body size
cap; the API key."""

from __future__ import annotations

import logging
import re
import secrets
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import OIP_PREFIX, ApiError, internal_error_response, send_error, speaks_oip
from app.logs import request_id_var
from app.metrics import Metrics, method_label

log = logging.getLogger("app.access")
# On every response. The pages (/, /docs, /redoc) set a content security policy of their own; every
# other response gets one that lets it load nothing and be framed nowhere.
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
DEFAULT_POLICY = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
OIP_HEALTH = OIP_PREFIX + "/health/"


class RequestContextMiddleware:
    """Gives each request an id (the client's ``X-Request-ID`` or a new one), returns it in the
    response header with the security headers, logs the request, and counts it by route template,
    method and status. An exception nothing else handled is answered here, as a 500 in the API's
    error shape, so that it carries the id and the headers like every other answer."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics
        self._known: set[str] | None = None
        self._templates: list[tuple[re.Pattern[str], str]] = []

    def _route_template(self, scope: Scope) -> str:
        """A bounded route label: a documented path, ``/static/{name}``, or ``unmatched``.

        Most of the API's paths have no parameters, so the request path is the template whenever it
        is one of them; the Open Inference Protocol's name a model (``/v2/models/{name}/...``) and are
        matched against their templates. Anything else (scanners, typos) shares one label instead of
        growing the metric's label set without bound.
        """
        if self._known is None:
            paths = set(scope["app"].openapi()["paths"])
            self._templates = [(_template_pattern(p), p) for p in sorted(paths) if "{" in p]
            self._known = {p for p in paths if "{" not in p} | {"/", "/docs", "/redoc", "/openapi.json"}
        path: str = scope["path"]
        if path in self._known:
            return path
        for pattern, template in self._templates:
            if pattern.fullmatch(path):
                return template
        for prefix in ("/static/", "/docs/assets/"):
            if path.startswith(prefix):
                return prefix + "{name}"
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        start, status, started = time.perf_counter(), 500, False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                headers = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode("latin-1")),
                    *SECURITY_HEADERS,
                ]
                if not any(name.lower() == DEFAULT_POLICY[0] for name, _ in headers):
                    headers.append(DEFAULT_POLICY)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:  # what no handler answered: logged, and a 500 if nothing was sent yet
            log.exception("unhandled error", exc_info=exc)
            if started:
                raise  # the answer is under way: the server closes the connection
            await internal_error_response(scope["path"])(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = self._route_template(scope)
            self.metrics.requests.labels(route, method_label(scope["method"]), str(status)).inc()
            self.metrics.latency.labels(route).observe(elapsed)
            if status >= 400 or log.isEnabledFor(logging.DEBUG):
                log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                    },
                )
            request_id_var.reset(token)


def _template_pattern(template: str) -> re.Pattern[str]:
    """What ``template`` (``/v2/models/{name}``) matches: any one path segment for each parameter."""
    segments = ("[^/]+" if part.startswith("{") else re.escape(part) for part in template.split("/"))
    return re.compile("/".join(segments))


class BodyTooLargeError(ApiError):
    def __init__(self, limit: int):
        super().__init__(413, "payload_too_large", f"the request body exceeds the limit of {limit} bytes")


class BodyLimitMiddleware:
    """413 for bodies over ``limit`` bytes: by Content-Length up front, else counted as it arrives.

    A client that lies about (or omits) Content-Length is cut off as soon as the bytes received
    pass the limit, so memory use stays bounded whatever it sends.
    """

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            message = f"the request body exceeds the limit of {self.limit} bytes"
            await send_error(send, 413, "payload_too_large", message, {"Connection": "close"}, scope["path"])
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLargeError(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError as exc:  # raised where no handler could turn it into a response
            if not started:
                await send_error(send, 413, exc.code, exc.message, {"Connection": "close"}, scope["path"])


class ApiKeyMiddleware:
    """401 ``unauthorized`` for a request to the API (:func:`needs_key`) without the right ``X-API-Key`` header.

    Installed only when the server has a key. It answers before routing, so a rejected request
    costs no parameter parsing and no body reading; CORS preflights are answered outside it.
    """

    def __init__(self, app: ASGIApp, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and needs_key(scope["path"]):
            given = next((value for name, value in scope["headers"] if name == b"x-api-key"), b"")
            if not secrets.compare_digest(given, self.key):
                await send_error(send, 401, "unauthorized", "missing or wrong X-API-Key header", path=scope["path"])
                return
        await self.app(scope, receive, send)


def needs_key(path: str) -> bool:
    """Whether a request to ``path`` needs the API key: everything under ``/v1/`` and ``/v2`` but the
    Open Inference Protocol's health checks, which, like ``/healthz`` and ``/readyz``, an orchestrator's
    probes call without one."""
    if path.startswith("/v1/"):
        return True
    return speaks_oip(path) and not path.startswith(OIP_HEALTH)
