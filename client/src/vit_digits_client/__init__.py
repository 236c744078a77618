"""A typed client for the vit-digits service: :class:`Client` (blocking) and :class:`AsyncClient`.

Calls are retried on a 503 (after its ``Retry-After``) and on connection errors (with jittered
backoff) until their deadline, never on a 4xx; the errors are typed by what happened
(:class:`NotADigit`, :class:`InvalidImage`, :class:`Overloaded`...). Only httpx is needed.
"""

from vit_digits_client.aio import AsyncClient
from vit_digits_client.client import Client
from vit_digits_client.errors import (
    ConnectionFailed,
    DeadlineExceeded,
    InvalidImage,
    ModelNotFound,
    NoDigit,
    NotADigit,
    Overloaded,
    PayloadTooLarge,
    RequestError,
    ServerError,
    Unauthorized,
    VitDigitsError,
)
from vit_digits_client.images import ImageInput
from vit_digits_client.results import Attention, Calibration, ModelInfo, Prediction, TopK
from vit_digits_client.retries import RetryPolicy

__all__ = [
    "AsyncClient",
    "Attention",
    "Calibration",
    "Client",
    "ConnectionFailed",
    "DeadlineExceeded",
    "ImageInput",
    "InvalidImage",
    "ModelInfo",
    "ModelNotFound",
    "NoDigit",
    "NotADigit",
    "Overloaded",
    "PayloadTooLarge",
    "Prediction",
    "RequestError",
    "RetryPolicy",
    "ServerError",
    "TopK",
    "Unauthorized",
    "VitDigitsError",
]
