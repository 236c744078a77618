"""The service's /v1 API as requests to build and responses to read, without sending anything: shared
by :class:`~vit_digits_client.Client` and :class:`~vit_digits_client.AsyncClient`, which only send."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypeVar

import httpx

from vit_digits_client.errors import Overloaded, VitDigitsError, error_from
from vit_digits_client.images import UNKNOWN_TYPE, Upload
from vit_digits_client.results import Attention, ModelInfo, Prediction

DEFAULT_URL = "http://localhost:8000"
URL_VARIABLE, KEY_VARIABLE = "VIT_DIGITS_URL", "VIT_DIGITS_API_KEY"
BATCH_PATH = "/v1/predict/batch"
FALLBACK_BATCH_LIMIT = 64  # the server's default, for a server whose OpenAPI document does not say
Result = Prediction | VitDigitsError
T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """One request to make (again, if it is retried)."""

    method: str
    path: str
    params: dict[str, str | int] = field(default_factory=dict)
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None

    def request(self, http: httpx.Client | httpx.AsyncClient, timeout: float) -> httpx.Request:
        return http.build_request(
            self.method,
            self.path,
            params=self.params,
            content=self.content,
            files=self.files,
            headers=self.headers,
            timeout=timeout,
        )


def base_url(url: str | None) -> str:
    """``url``, else ``$VIT_DIGITS_URL``, else http://localhost:8000."""
    return (url or os.environ.get(URL_VARIABLE) or DEFAULT_URL).rstrip("/")


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The ``X-API-Key`` header: ``api_key``, else ``$VIT_DIGITS_API_KEY``, else none."""
    key = api_key or os.environ.get(KEY_VARIABLE)
    return {"X-API-Key": key} if key else {}


def _options(model: str | None, **params: int | bool | str | None) -> dict[str, str | int]:
    given = {"model": model, **params}
    return {k: str(v).lower() if isinstance(v, bool) else v for k, v in given.items() if v is not None}


def predict_call(upload: Upload, model: str | None, top_k: int, reject: bool | None) -> Call:
    return _single("/v1/predict", upload, _options(model, top_k=top_k, reject=reject))


def attention_call(upload: Upload, model: str | None, layers: bool, reject: bool | None) -> Call:
    params = _options(model, layers="all" if layers else "none", reject=reject)
    return _single("/v1/attention", upload, params)


def _single(path: str, upload: Upload, params: dict[str, str | int]) -> Call:
    """The picture as the raw body (the server's fastest path), or as a multipart file if its type is
    not recognised here (the server then says what is wrong with it)."""
    if upload.content_type == UNKNOWN_TYPE:
        return Call("POST", path, params, files=[("file", (upload.name, upload.data, UNKNOWN_TYPE))])
    return Call("POST", path, params, content=upload.data, headers={"Content-Type": upload.content_type})


def batch_call(uploads: list[Upload], model: str | None, top_k: int, reject: bool | None) -> Call:
    files = [("files", (u.name, u.data, u.content_type)) for u in uploads]
    return Call("POST", BATCH_PATH, _options(model, top_k=top_k, reject=reject), files=files)


MODELS_CALL = Call("GET", "/v1/models")
OPENAPI_CALL = Call("GET", "/openapi.json")


def error_of(response: httpx.Response) -> VitDigitsError:
    """The error a non-2xx ``response`` carries (its body's code, or its status if it has none)."""
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "", f"HTTP {response.status_code}: {response.text[:200]}"
    return error_from(response.status_code, code, message, response.headers.get("x-request-id", ""))


def overloaded(response: httpx.Response) -> Overloaded:
    error = error_of(response)
    if isinstance(error, Overloaded):
        return error
    return Overloaded(error.message, status=503, code=error.code, request_id=error.request_id)


def prediction(response: httpx.Response) -> Prediction:
    return Prediction.from_json(response.json())


def attention(response: httpx.Response) -> Attention:
    return Attention.from_json(response.json())


def models(response: httpx.Response) -> list[ModelInfo]:
    return [ModelInfo.from_json(model) for model in response.json()["models"]]


def batch_results(response: httpx.Response) -> list[Result]:
    """Each picture's prediction or its own error, in order."""
    request_id = response.headers.get("x-request-id", "")
    results: list[Result] = []
    for item in response.json()["results"]:
        if item.get("error") is not None:
            error = item["error"]
            results.append(error_from(None, error["code"], f"{item['filename']}: {error['message']}", request_id))
        else:
            results.append(Prediction.from_json(item["prediction"]))
    return results


def batch_limit(openapi: dict[str, Any]) -> int:
    """The most pictures the server takes in one batch request, as its OpenAPI document states it
    (``maxItems`` of the batch endpoint's ``files``)."""
    try:
        body = openapi["paths"][BATCH_PATH]["post"]["requestBody"]["content"]["multipart/form-data"]
        return int(body["schema"]["properties"]["files"]["maxItems"])
    except (KeyError, TypeError, ValueError):
        return FALLBACK_BATCH_LIMIT


def overloaded_items(results: list[Result]) -> list[int]:
    """The positions of pictures the server had no room for (each retried on its own)."""
    return [i for i, result in enumerate(results) if isinstance(result, Overloaded)]


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last shorter), read lazily."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
