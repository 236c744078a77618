"""The FastAPI application: settings, lifespan model loading, middleware, routes."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.api.routes import attention, docs, health, models, page, predict, v2
from app.decoding import Decoder, decode_task
from app.errors import install_error_handlers
from app.metrics import Metrics
from app.middleware import ApiKeyMiddleware, BodyLimitMiddleware, RequestContextMiddleware
from app.openapi import document_api
from app.registry import ModelLoadError, build_registry, load_models
from app.settings import Settings
from app.worker_pool import Limits, WorkerPool

log = logging.getLogger(__name__)
MB = 1 << 20
YOUNG_GC_THRESHOLD = 20_000  # allocations between collections of the youngest generation (CPython: 700)
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (<malloc.h>)
MMAP_THRESHOLD = 1 << 20  # bytes: allocations this big get mappings of their own, unmapped when freed


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the decoder processes, load and warm up the models: in the background (/healthz answers
    at once, /readyz once done), or before uvicorn starts listening if ``load_before_listen``. If
    they cannot be started or loaded, the server stops (see :func:`_load_failed`), unless
    ``on_load_failure`` is ``stay``. On shutdown the decoder processes are stopped."""
    state = app.state
    _return_freed_memory()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    state.decoding = _decoder(state.settings)

    async def load() -> None:
        try:
            models = asyncio.get_running_loop().run_in_executor(executor, load_models, state.settings)
            loaded, _ = await asyncio.gather(models, state.decoding.pool.start())  # one waits on the other's core
            state.registry = build_registry(loaded, state.settings, state.metrics, executor)
        except Exception as exc:
            _load_failed(app, exc)
            return
        _settle_garbage_collector()
        state.status = "ready"

    task: asyncio.Task[None] | None = None
    if state.settings.load_before_listen:
        await load()  # uvicorn starts listening only once the lifespan's startup is done
        if state.load_error is not None and state.settings.on_load_failure == "exit":
            raise state.load_error  # the server reports a failed startup and exits (uvicorn: status 3)
    else:
        task = asyncio.create_task(load())
    yield
    if task is not None:
        task.cancel()
    if state.registry is not None:
        await state.registry.stop()
    executor.shutdown(wait=False, cancel_futures=True)
    await state.decoding.pool.close()
    log.info("app shut down")


def _decoder(settings: Settings) -> Decoder:
    """Uploads are decoded in ``max_concurrent_decodes`` processes of this worker's own, under
    the decode limits (app.decoding); started by :func:`lifespan`."""
    limits = Limits(settings.max_concurrent_decodes, settings.decode_memory_mb * MB, settings.decode_max_tasks)
    pool = WorkerPool(decode_task, limits, name="decoder")
    return Decoder(pool, settings.max_image_pixels, settings.max_full_decode_pixels, settings.decode_timeout_s)


def _load_failed(app: FastAPI, exc: Exception) -> None:
    """Report why the models could not be loaded: on /readyz (model ids, no paths) and in the log
    (everything). With ``on_load_failure=exit`` a server started in the background is told to stop
    through ``app.state.exit_server``, which ``python -m app`` sets (and then exits with status 1)."""
    state = app.state
    error = exc if isinstance(exc, ModelLoadError) else ModelLoadError(str(exc), str(exc))
    log.error("model loading failed", extra={"error": error.detail}, exc_info=exc)
    state.status = f"model loading failed: {error}"
    state.load_error = error
    if state.settings.on_load_failure == "exit" and not state.settings.load_before_listen:
        if state.exit_server is not None:
            state.exit_server()
        else:
            log.warning("no way to stop this server from the app; it stays up, not ready")


def _return_freed_memory() -> None:
    """Have glibc return the memory of big pictures to the system once they are freed.

    glibc maps allocations over a threshold on their own, but raises the threshold to the largest
    such block freed so far (up to 32 MB): after the first big picture, Pillow's 16 MB blocks come
    from the heaps, and the next ones' memory stays in the process. A fixed threshold keeps every
    big block mapped on its own (measured with bench/hardening.py; figures in docs/PERFORMANCE.md).
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        except AttributeError:  # not glibc
            log.debug("no mallopt: freed memory is returned as the C library sees fit")


def _settle_garbage_collector() -> None:
    """Once the models are loaded: freeze what lives as long as the process, collect young objects rarely."""
    # What is allocated by now (the models, the app) lives as long as the process: frozen, no collection walks it.
    gc.collect()
    gc.freeze()
    # A collection holds the GIL and pauses the event loop; requests allocate fast, so the youngest
    # generation is collected rarely (figures: docs/PERFORMANCE.md). Cycles are still collected, later.
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; models load when its lifespan starts, never at import."""
    app = FastAPI(
        title="vit-digits",
        version="0.1.0",
        lifespan=lifespan,
        description="Handwritten digit classification with a Vision Transformer, with attention maps.",
        docs_url=None,  # app.api.routes.docs serves /docs and /redoc without a CDN
        redoc_url=None,
    )
    app.state.settings = settings or Settings()
    app.state.metrics = Metrics()
    app.state.registry = None
    app.state.status = "loading models"
    app.state.load_error = None
    app.state.exit_server = None  # set by whoever runs the server and can stop it (python -m app)
    install_error_handlers(app)
    v1 = APIRouter(prefix="/v1")
    for module in (predict, attention, models):
        v1.include_router(module.router)
    app.include_router(v1)
    app.include_router(v2.router)  # the Open Inference Protocol
    app.include_router(health.router)
    app.include_router(page.router)
    app.include_router(docs.router)
    document_api(
        app, api_key=app.state.settings.api_key is not None, max_batch_files=app.state.settings.max_batch_files
    )
    # Middleware added later wraps what was added before: from the outside in, request context,
    # body limit, CORS (so that preflights need no key), API key.
    if app.state.settings.api_key:
        app.add_middleware(ApiKeyMiddleware, key=app.state.settings.api_key)
    if app.state.settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=app.state.settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(BodyLimitMiddleware, limit=app.state.settings.max_upload_bytes)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    return app
