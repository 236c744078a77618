"""The asyncio client: :class:`AsyncClient`, :class:`~vit_digits_client.Client`'s twin."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType

import httpx

from vit_digits_client import _protocol as api
from vit_digits_client.client import Progress
from vit_digits_client.errors import Overloaded, PayloadTooLarge
from vit_digits_client.images import ImageInput, Upload, to_upload
from vit_digits_client.results import Attention, ModelInfo, Prediction
from vit_digits_client.retries import Attempts, RetryPolicy


class AsyncClient:
    """A connection pool to one vit-digits server, for asyncio; the arguments and methods of
    :class:`~vit_digits_client.Client`, awaited. ``predict_many`` sends up to ``concurrency`` batch
    requests at once."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        max_connections: int = 100,
        concurrency: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.url = api.base_url(url)
        self.retry = retry or RetryPolicy(timeout=timeout)
        self.concurrency = concurrency
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        headers = api.auth_headers(api_key)
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, limits=limits, transport=transport)
        self._batch_limit: int | None = None

    async def predict(
        self, image: ImageInput, *, model: str | None = None, top_k: int = 3, reject: bool | None = None
    ) -> Prediction:
        """One picture's prediction (:meth:`Client.predict <vit_digits_client.Client.predict>`)."""
        return api.prediction(await self._send(api.predict_call(to_upload(image), model, top_k, reject)))

    async def predict_many(
        self,
        images: Iterable[ImageInput],
        *,
        model: str | None = None,
        top_k: int = 3,
        reject: bool | None = None,
        progress: Progress | None = None,
    ) -> list[api.Result]:
        """Every picture's prediction or its own error, in order; ``concurrency`` batch requests at a time."""
        limit = await self.batch_limit()
        slots = asyncio.Semaphore(self.concurrency)
        done = 0

        async def answer(start: int, chunk: list[ImageInput]) -> list[api.Result]:
            nonlocal done
            async with slots:
                uploads = [to_upload(image, f"image{start + i}") for i, image in enumerate(chunk)]
                results = await self._batch(uploads, Attempts(self.retry), model, top_k, reject)
            done += len(results)
            if progress is not None:
                progress(done)
            return results

        chunks = list(api.chunks(images, limit))
        answered = await asyncio.gather(*(answer(i * limit, chunk) for i, chunk in enumerate(chunks)))
        return [result for results in answered for result in results]

    async def attention(
        self, image: ImageInput, *, model: str | None = None, layers: bool = False, reject: bool | None = None
    ) -> Attention:
        """The prediction with the attention maps."""
        return api.attention(await self._send(api.attention_call(to_upload(image), model, layers, reject)))

    async def models(self) -> list[ModelInfo]:
        """The models the server serves."""
        return api.models(await self._send(api.MODELS_CALL))

    async def batch_limit(self) -> int:
        """The most pictures the server takes in one request (read once)."""
        if self._batch_limit is None:
            self._batch_limit = api.batch_limit((await self._send(api.OPENAPI_CALL)).json())
        return self._batch_limit

    async def _batch(
        self, uploads: list[Upload], attempts: Attempts, model: str | None, top_k: int, reject: bool | None
    ) -> list[api.Result]:
        """:meth:`Client._batch <vit_digits_client.Client._batch>`, awaited."""
        try:
            response = await self._send(api.batch_call(uploads, model, top_k, reject), attempts)
            results = api.batch_results(response)
        except PayloadTooLarge as exc:
            if len(uploads) == 1:
                return [exc]
            half = len(uploads) // 2
            first = await self._batch(uploads[:half], attempts, model, top_k, reject)
            return first + await self._batch(uploads[half:], attempts, model, top_k, reject)
        while again := api.overloaded_items(results):
            error = results[again[0]]
            assert isinstance(error, Overloaded)
            try:
                await asyncio.sleep(attempts.after_overload(None, error))
            except Overloaded:
                break
            retried = await self._batch([uploads[i] for i in again], attempts, model, top_k, reject)
            for i, result in zip(again, retried, strict=True):
                results[i] = result
        return results

    async def _send(self, call: api.Call, attempts: Attempts | None = None) -> httpx.Response:
        """:meth:`Client._send <vit_digits_client.Client._send>`, awaited."""
        attempts = attempts or Attempts(self.retry)
        while True:
            try:
                response = await self._http.send(call.request(self._http, attempts.remaining()))
            except httpx.TransportError as exc:
                await asyncio.sleep(attempts.after_network_error(exc))
                continue
            if response.status_code == 503:
                wait = attempts.after_overload(response.headers.get("retry-after"), api.overloaded(response))
                await asyncio.sleep(wait)
                continue
            if not response.is_success:
                raise api.error_of(response)
            return response

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()
