"""Request ids, access logs and request metrics, as one pure-ASGI middleware (cheap per request)."""

from __future__ import annotations

import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import request_id_var
from app.metrics import Metrics

log = logging.getLogger("app.access")


class RequestContextMiddleware:
    """Gives each request an id (the client's ``X-Request-ID`` or a new one), returns it in the
    response header, logs the request, and counts it by route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics
        self._known: set[str] | None = None

    def _route_template(self, scope: Scope) -> str:
        """A bounded route label: a documented path, ``/static/{name}``, or ``unmatched``.

        The API's paths have no parameters, so the request path is the template whenever it is
        one of them; anything else (scanners, typos) shares one label instead of growing the
        metric's label set without bound.
        """
        if self._known is None:
            self._known = set(scope["app"].openapi()["paths"]) | {"/", "/docs", "/redoc", "/openapi.json"}
        path: str = scope["path"]
        if path in self._known:
            return path
        return "/static/{name}" if path.startswith("/static/") else "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        start, status = time.perf_counter(), 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = self._route_template(scope)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
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
