"""The errors a call can end in, one class per thing a caller does about it.

The server's error body is ``{"error": {"code", "message", "request_id"}}``; its ``code`` picks the
class (:func:`error_from`), so that ``except NotADigit`` reads as what happened. Client-side
failures (the deadline, the connection) have classes of their own.
"""

from __future__ import annotations


class VitDigitsError(Exception):
    """Any error of a call: the HTTP ``status`` (None if none came back), the server's ``code``,
    its ``message`` and the ``request_id`` to look the request up in the server's log."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "", request_id: str = ""):
        super().__init__(message)
        self.message, self.status, self.code, self.request_id = message, status, code, request_id

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


class RequestError(VitDigitsError):
    """The server refused the request (a 4xx): sending it again changes nothing, so it is never retried."""


class InvalidImage(RequestError):
    """The picture cannot be read: empty, corrupt, not an accepted format, or too large."""


class NoDigit(RequestError):
    """The picture is blank, or holds only specks of ink: there is no digit to read."""


class NotADigit(RequestError):
    """The picture does not look like a digit (a letter, a symbol, a photo), and the call asked for
    such pictures to be refused (``reject=True``, or the server's default)."""


class ModelNotFound(RequestError):
    """No model of that id is served."""


class Unauthorized(RequestError):
    """The server wants an API key (``X-API-Key``) and got none, or a wrong one."""


class PayloadTooLarge(RequestError):
    """The request body, or the number of pictures in it, is over the server's limit."""


class ServerError(VitDigitsError):
    """The server failed to answer (a 5xx other than those below)."""


class Overloaded(ServerError):
    """The server stayed at capacity (503) until the call's deadline, through every retry."""


class DeadlineExceeded(VitDigitsError):
    """The call's deadline passed, on this side (retries included) or the server's (504)."""


class ConnectionFailed(VitDigitsError):
    """No answer could be had from the server: it could not be reached, or hung up, until the deadline."""


_BY_CODE: dict[str, type[VitDigitsError]] = {
    "invalid_image": InvalidImage,
    "empty_image": InvalidImage,
    "unsupported_format": InvalidImage,
    "unsupported_media_type": InvalidImage,
    "image_too_large": InvalidImage,
    "no_digit": NoDigit,
    "not_a_digit": NotADigit,
    "model_not_found": ModelNotFound,
    "unauthorized": Unauthorized,
    "payload_too_large": PayloadTooLarge,
    "too_many_files": PayloadTooLarge,
    "queue_full": Overloaded,
    "not_ready": Overloaded,
    "inference_timeout": DeadlineExceeded,
}


def error_from(status: int | None, code: str, message: str, request_id: str = "") -> VitDigitsError:
    """The error for the server's ``code`` (or, for a code this client does not know, its ``status``)."""
    kind = _BY_CODE.get(code)
    if kind is None:
        kind = RequestError if status is not None and 400 <= status < 500 else ServerError
    return kind(message, status=status, code=code, request_id=request_id)
