"""From uploaded bytes to a model answer: preprocessing off the loop, batched inference, one deadline."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request, Response
from PIL import Image
from pydantic import BaseModel

from app.batcher import MicroBatcher, QueueFullError
from app.deps import decoder_of, settings_of
from app.errors import ApiError
from app.inference import Prediction
from app.registry import ServedModel
from app.schemas import PredictionOut, TopK
from app.settings import Settings
from app.uploads import read_single_image
from model.preprocess import ImageError, Prepared, load_image, open_image, prepare

R = TypeVar("R")
P = TypeVar("P", bound=Prediction)
_STATUS = {"empty_image": 400, "invalid_image": 400, "unsupported_format": 415, "image_too_large": 413, "no_digit": 422}


def as_api_error(exc: ImageError) -> ApiError:
    return ApiError(_STATUS.get(exc.code, 400), exc.code, str(exc))


# Up to this many pixels an image is preprocessed right on the event loop: for a small digit the
# work (a few hundred microseconds) costs about what a hop to a worker thread costs. Larger
# pictures (photos) go to the decoding threads (``max_concurrent_decodes`` of them), so that they
# never stall other requests and their memory stays bounded however many arrive at once.
INLINE_PIXELS = 256 * 256


@dataclass(frozen=True)
class Deadline:
    """When a request must be answered: decoding, preprocessing and inference all count."""

    at: float  # on the event loop's clock
    timeout_s: float

    @classmethod
    def start(cls, timeout_s: float) -> Deadline:
        return cls(asyncio.get_running_loop().time() + timeout_s, timeout_s)

    def remaining(self) -> float:
        return max(self.at - asyncio.get_running_loop().time(), 0.0)

    def missed(self) -> ApiError:
        return ApiError(504, "inference_timeout", f"not answered within the deadline of {self.timeout_s} s")


def _finish(image: Image.Image, served: ServedModel) -> Prepared | ApiError:
    """Decode the pixels of an opened image and normalise them as the model was trained; a bad
    image's error is returned, not raised (see :func:`preprocess`)."""
    pre = served.meta.preprocess
    try:
        return prepare(load_image(image), pre.mean, pre.std, pre.image_size)
    except ImageError as exc:
        return as_api_error(exc)


async def preprocess(
    data: bytes, served: ServedModel, settings: Settings, decoder: Executor, deadline: Deadline
) -> Prepared:
    """Decode and normalise (inline if small, else in one of the ``decoder`` threads, waiting for
    one at most until ``deadline``); problems become 4xx errors, a missed deadline 504.

    An exception raised in the worker thread would come back inside a reference cycle holding the
    upload and the half-decoded image, freed only by the next garbage collection (which
    ``app.main`` makes rarer); so the error comes back as a value, and is raised here without this
    frame keeping a reference to it. A picture still waiting for a thread when the deadline passes
    is dropped from the queue; one being decoded finishes in its thread (a bounded cost: the caps).
    """
    try:
        image = open_image(data, settings.max_image_pixels, settings.max_full_decode_pixels)  # header only
    except ImageError as exc:
        raise as_api_error(exc) from exc
    width, height = image.size
    if width * height <= INLINE_PIXELS:
        result = _finish(image, served)
    else:
        work = asyncio.get_running_loop().run_in_executor(decoder, _finish, image, served)
        try:
            result = await asyncio.wait_for(work, deadline.remaining())
        except TimeoutError:
            raise deadline.missed() from None
    if isinstance(result, Prepared):
        return result
    try:
        raise result
    finally:
        del result


async def infer(batcher: MicroBatcher[R], prepared: Prepared, deadline: Deadline) -> R:
    """Queue one input on ``batcher`` and wait for its result, at most until ``deadline``.

    Back-pressure becomes 503 + Retry-After, a missed deadline 504.
    """
    try:
        return await batcher.submit(prepared.model_input, deadline.remaining())
    except QueueFullError as exc:
        raise queue_full(exc) from exc
    except TimeoutError:
        raise deadline.missed() from None


async def classify_upload(
    request: Request, served: ServedModel, batcher: MicroBatcher[P], reject: bool | None
) -> tuple[Prepared, P]:
    """One uploaded picture through a route's whole flow: read, preprocess and infer within the
    request's deadline; a non-digit becomes 422 ``not_a_digit`` if the request (or server) rejects."""
    settings = settings_of(request)
    data = await read_single_image(request)
    deadline = Deadline.start(settings.request_timeout_s)
    prepared = await preprocess(data, served, settings, decoder_of(request), deadline)
    result = await infer(batcher, prepared, deadline)
    if not result.is_digit and rejects(reject, settings):
        raise not_a_digit(result, served)
    return prepared, result


def queue_full(exc: QueueFullError) -> ApiError:
    message = f"the server is at capacity ({exc}); retry shortly"
    return ApiError(503, "queue_full", message, headers={"Retry-After": "1"})


def rejects(reject: bool | None, settings: Settings) -> bool:
    """Whether a non-digit becomes an error: ``?reject=`` if given, else the server's default."""
    return settings.reject_non_digits if reject is None else reject


def not_a_digit(result: Prediction, served: ServedModel) -> ApiError:
    """422 ``not_a_digit`` for a picture whose digit score is below the model's threshold."""
    threshold = served.meta.calibration.threshold
    return ApiError(
        422,
        "not_a_digit",
        f"the picture does not look like a digit: digit score {result.digit_score:.3f} is below the model's "
        f"threshold {threshold:.3f}; send a single handwritten or typed digit (or leave reject off to get the "
        f"prediction with is_digit=false)",
    )


def prediction(
    result: Prediction, served: ServedModel, prepared: Prepared, top_k: int, latency_ms: float
) -> PredictionOut:
    probs = result.probabilities
    labels = served.meta.labels
    order = sorted(range(len(probs)), key=probs.__getitem__, reverse=True)
    best = order[0]
    return PredictionOut(
        digit=best,
        label=labels[best],
        confidence=round(probs[best], 6),
        probabilities=[round(p, 6) for p in probs],
        top_k=[TopK(label=labels[i], probability=round(probs[i], 6)) for i in order[:top_k]],
        is_digit=result.is_digit,
        digit_score=round(result.digit_score, 5),
        inverted=prepared.inverted,
        model_id=served.id,
        sha256=served.sha256,
        latency_ms=round(latency_ms, 3),
    )


def json_response(body: BaseModel) -> Response:
    """``body`` serialised once, by pydantic-core, straight to bytes.

    Returning a model from a route makes FastAPI validate it again against ``response_model`` and
    then encode it; the routes still declare ``response_model`` for the OpenAPI schema, but hand
    back the bytes of a model that was built valid.
    """
    return Response(body.model_dump_json(), media_type="application/json")
