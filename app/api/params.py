"""The query parameters the image routes share, validated and documented by FastAPI."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from app.settings import Settings

MODEL_ID_CHARS = 64
ModelQuery = Annotated[
    str | None,
    Query(max_length=MODEL_ID_CHARS, description="model id from /v1/models; the default if omitted"),
]
TopKQuery = Annotated[int, Query(ge=1, le=10, description="how many of the most probable digits to list")]
RejectQuery = Annotated[
    bool | None,
    Query(
        description="true: a picture that is not a digit (is_digit false) gets 422 not_a_digit (in a batch: its "
        "own error entry) instead of a prediction; default: the server's VIT_DIGITS_REJECT_NON_DIGITS"
    ),
]


def rejects(reject: bool | None, settings: Settings) -> bool:
    """Whether a non-digit becomes an error: ``?reject=`` if given, else the server's default."""
    return settings.reject_non_digits if reject is None else reject
