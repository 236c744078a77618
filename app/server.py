"""How uvicorn serves the app, in one worker or several: limits on request headers and on idle time.

uvicorn bounds neither the size of a request's header nor the time a client may take to send it
(its httptools parser buffers a header line of any length; its keep-alive timeout starts only
after a first response). A client could hold memory with an endless header line (20 connections
sending 25 MB each grew a worker by 250 MB) or hold connections with headers it never finishes.
:class:`LimitedHttpToolsProtocol` is uvicorn's own httptools protocol with those two limits added;
it is given to uvicorn through its ``http`` setting, which takes a protocol class, so both the
one-worker server and the workers of :mod:`app.workers` use it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.settings import Settings

log = logging.getLogger(__name__)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus: a request header (request line and fields) over
    ``max_header_bytes`` gets 431 and the connection closes; a header not complete within
    ``header_timeout_s`` of the connection opening or of the previous response gets 408 (or, if
    nothing of it came, a plain close) and the connection closes.

    The limits are class attributes, set by :func:`protocol_class` from the settings.
    """

    max_header_bytes = 64 * 1024
    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0
        self._reading_header = False
        self._in_flight = 0  # requests whose header is in and whose response is not yet complete
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # the parser holds at most one read (256 kB) beyond the limit
        if self._reading_header and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                message = f"the request header exceeds the limit of {self.max_header_bytes} bytes"
                self._refuse(431, "header_too_large", message)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_header, self._header_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._reading_header, self._header_bytes = False, 0
        self._in_flight += 1
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._in_flight -= 1
        if self._in_flight == 0 and not self.transport.is_closing():
            self._arm_header_timer()  # idle until the next request: it too must come in time

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timed_out)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._reading_header:
            self._refuse(408, "header_timeout", f"the request header did not arrive within {self.header_timeout_s} s")
        else:
            self.transport.close()  # an idle connection: nothing to answer

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer with the service's JSON error shape and close the connection."""
        request_id = uuid.uuid4().hex
        log.info("connection refused", extra={"status": status, "code": code, "client": self.client})
        body = json.dumps({"error": {"code": code, "message": message, "request_id": request_id}}).encode()
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        head = [
            b"HTTP/1.1 %d %s" % (status, reason),
            b"content-type: application/json",
            b"content-length: %d" % len(body),
            b"x-request-id: " + request_id.encode(),
            b"connection: close",
        ]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()
        self._reading_header = False


def protocol_class(settings: Settings) -> type[LimitedHttpToolsProtocol]:
    """:class:`LimitedHttpToolsProtocol` with the limits of ``settings``."""
    return type(
        "LimitedHttpToolsProtocol",
        (LimitedHttpToolsProtocol,),
        {"max_header_bytes": settings.max_header_bytes, "header_timeout_s": settings.header_timeout_s},
    )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What every uvicorn server of this service is configured with (one worker or several)."""
    return {
        "http": protocol_class(settings),
        "timeout_keep_alive": settings.keep_alive_s,
        "log_config": None,
        "access_log": False,
    }
