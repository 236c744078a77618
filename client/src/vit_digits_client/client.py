"""The blocking client: :class:`Client`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from types import TracebackType

import httpx

from vit_digits_client import _protocol as api
from vit_digits_client.errors import Overloaded, PayloadTooLarge
from vit_digits_client.images import ImageInput, Upload, to_upload
from vit_digits_client.results import Attention, ModelInfo, Prediction
from vit_digits_client.retries import Attempts, RetryPolicy

Progress = Callable[[int], None]  # called with how many pictures are answered so far


class Client:
    """A connection pool to one vit-digits server; safe to share between threads.

    Args:
        url: the server; else ``$VIT_DIGITS_URL``, else http://localhost:8000.
        api_key: sent as ``X-API-Key``; else ``$VIT_DIGITS_API_KEY``, else none.
        timeout: each call's deadline in seconds, retries included (a shorthand for ``retry``).
        retry: the whole retry policy (:class:`RetryPolicy`), instead of ``timeout``.
        max_connections: most connections open at once (the pool's size).
        transport: an httpx transport to send through instead of the network (tests, proxies).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        max_connections: int = 100,
        transport: httpx.BaseTransport | None = None,
    ):
        self.url = api.base_url(url)
        self.retry = retry or RetryPolicy(timeout=timeout)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        headers = api.auth_headers(api_key)
        self._http = httpx.Client(base_url=self.url, headers=headers, limits=limits, transport=transport)
        self._batch_limit: int | None = None

    def predict(
        self, image: ImageInput, *, model: str | None = None, top_k: int = 3, reject: bool | None = None
    ) -> Prediction:
        """One picture's prediction.

        Args:
            image: a path, bytes, a PIL image, or an array ((H, W) or (H, W, C); uint8, or floats in [0, 1]).
            model: a model id (:meth:`models`); the server's default if None.
            top_k: how many of the most probable digits ``top_k`` lists.
            reject: True: a picture that is not a digit raises :class:`NotADigit`; None: the server's default.

        Raises:
            VitDigitsError: one of its subclasses (``InvalidImage``, ``NoDigit``, ``NotADigit``,
                ``Overloaded``, ``DeadlineExceeded``, ``ConnectionFailed``, ...).
        """
        return api.prediction(self._send(api.predict_call(to_upload(image), model, top_k, reject)))

    def predict_many(
        self,
        images: Iterable[ImageInput],
        *,
        model: str | None = None,
        top_k: int = 3,
        reject: bool | None = None,
        progress: Progress | None = None,
    ) -> list[api.Result]:
        """Every picture's prediction or its own error (an ``InvalidImage``, say), in order.

        The pictures go in batch requests of the server's most files each (read from it once), each
        request with its own deadline; pictures the server had no room for are sent again.
        """
        limit = self.batch_limit()
        results: list[api.Result] = []
        for chunk in api.chunks(images, limit):
            uploads = [to_upload(image, f"image{len(results) + i}") for i, image in enumerate(chunk)]
            results += self._batch(uploads, Attempts(self.retry), model, top_k, reject)
            if progress is not None:
                progress(len(results))
        return results

    def attention(
        self, image: ImageInput, *, model: str | None = None, layers: bool = False, reject: bool | None = None
    ) -> Attention:
        """The prediction with the attention maps (every layer's and head's too, with ``layers``)."""
        return api.attention(self._send(api.attention_call(to_upload(image), model, layers, reject)))

    def models(self) -> list[ModelInfo]:
        """The models the server serves (one has ``default`` set)."""
        return api.models(self._send(api.MODELS_CALL))

    def batch_limit(self) -> int:
        """The most pictures the server takes in one request (from its OpenAPI document, read once)."""
        if self._batch_limit is None:
            self._batch_limit = api.batch_limit(self._send(api.OPENAPI_CALL).json())
        return self._batch_limit

    def _batch(
        self, uploads: list[Upload], attempts: Attempts, model: str | None, top_k: int, reject: bool | None
    ) -> list[api.Result]:
        """``uploads`` answered in one request, or halves of it if it is too large; those the server
        had no room for sent again until ``attempts``' deadline."""
        try:
            results = api.batch_results(self._send(api.batch_call(uploads, model, top_k, reject), attempts))
        except PayloadTooLarge as exc:
            if len(uploads) == 1:
                return [exc]
            half = len(uploads) // 2
            first = self._batch(uploads[:half], attempts, model, top_k, reject)
            return first + self._batch(uploads[half:], attempts, model, top_k, reject)
        while again := api.overloaded_items(results):
            error = results[again[0]]
            assert isinstance(error, Overloaded)
            try:
                time.sleep(attempts.after_overload(None, error))
            except Overloaded:
                break  # the deadline: those pictures keep their Overloaded errors
            retried = self._batch([uploads[i] for i in again], attempts, model, top_k, reject)
            for i, result in zip(again, retried, strict=True):
                results[i] = result
        return results

    def _send(self, call: api.Call, attempts: Attempts | None = None) -> httpx.Response:
        """``call``'s 2xx response, tried again on a 503 or a broken connection until the deadline.

        Raises:
            VitDigitsError: the error of any other response, or of the last try.
        """
        attempts = attempts or Attempts(self.retry)
        while True:
            try:
                response = self._http.send(call.request(self._http, attempts.remaining()))
            except httpx.TransportError as exc:
                time.sleep(attempts.after_network_error(exc))
                continue
            if response.status_code == 503:
                time.sleep(attempts.after_overload(response.headers.get("retry-after"), api.overloaded(response)))
                continue
            if not response.is_success:
                raise api.error_of(response)
            return response

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
