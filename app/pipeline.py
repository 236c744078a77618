"""From an uploaded picture's bytes to the model's answer: decode, preprocess, infer, verdict.

Plain values in and out, no HTTP: a route reads a request into bytes and options, calls these
functions, and encodes what they return, or the :class:`PipelineError` they raise, in the shape of
the protocol it speaks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from app.batcher import MicroBatcher, QueueFullError
from app.decoding import Decoder, DecodeTimeoutError
from app.inference import Prediction
from app.registry import ServedModel
from model.meta import Preprocessing
from model.preprocess import ImageError, Prepared

R = TypeVar("R", bound=Prediction)
T = TypeVar("T")


class PipelineError(Exception):
    """Why a picture gets no answer: a machine-readable ``code`` and a message for the client.

    The codes: those of :class:`model.preprocess.ImageError` (the picture cannot be read as a
    digit), ``not_a_digit`` (a non-digit, when asked to reject them), ``queue_full`` (at capacity:
    retry shortly) and ``inference_timeout`` (the deadline passed).
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


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

    def missed(self) -> PipelineError:
        return PipelineError("inference_timeout", f"not answered within the deadline of {self.timeout_s} s")


async def classify(
    data: bytes, served: ServedModel, batcher: MicroBatcher[R], decoder: Decoder, deadline: Deadline, reject: bool
) -> tuple[Prepared, R]:
    """One picture's whole way: decoded and preprocessed for ``served``, inferred by ``batcher`` (one
    of its batchers), all within ``deadline``; with ``reject``, a non-digit is ``not_a_digit``.

    Raises:
        PipelineError: the picture gets no answer.
    """
    prepared = await preprocess(data, served.meta.preprocess, decoder, deadline)
    result = await infer(batcher, prepared, deadline)
    if reject and not result.is_digit:
        raise not_a_digit(result, served.meta.calibration.threshold)
    return prepared, result


async def classify_each(
    pictures: list[bytes], served: ServedModel, decoder: Decoder, deadline: Deadline, reject: bool
) -> list[tuple[Prepared, Prediction] | PipelineError]:
    """Many pictures, each classified on its own (:func:`classify`; the batcher batches their
    inference together): each gets its answer or its own error.

    Raises:
        PipelineError: ``queue_full`` if the queue has no room for all of them.
    """
    room = served.predict.room()
    if room < len(pictures):
        raise queue_full(QueueFullError(f"room for {room} more images"))
    return await asyncio.gather(*(_classify_one(data, served, decoder, deadline, reject) for data in pictures))


async def _classify_one(
    data: bytes, served: ServedModel, decoder: Decoder, deadline: Deadline, reject: bool
) -> tuple[Prepared, Prediction] | PipelineError:
    try:
        return await classify(data, served, served.predict, decoder, deadline, reject)
    except PipelineError as exc:
        return exc


async def classify_all(
    pictures: list[bytes],
    served: ServedModel,
    batcher: MicroBatcher[R],
    decoder: Decoder,
    deadline: Deadline,
    reject: bool,
) -> list[tuple[Prepared, R]]:
    """Many pictures answered together or not at all, as a protocol whose request is one tensor needs
    (the Open Inference Protocol): each classified on its own (:func:`classify`, on ``batcher``, one of
    ``served``'s batchers, which batches their inference together).

    Raises:
        PipelineError: ``queue_full`` if the queue has no room for all of them; else the error of the
            first picture (in order) that gets no answer, its message naming the picture's position.
    """
    _ensure_room(batcher, len(pictures))
    answers = await asyncio.gather(
        *(classify(data, served, batcher, decoder, deadline, reject) for data in pictures), return_exceptions=True
    )
    return _all_answered(answers, "picture")


async def infer_all(
    inputs: np.ndarray, served: ServedModel, batcher: MicroBatcher[R], deadline: Deadline, reject: bool
) -> list[R]:
    """Model inputs that arrive preprocessed, (N, C, S, S) float32 normalised as ``served``'s metadata
    says, each inferred on ``batcher`` (so they batch with everything else); with ``reject``, a
    non-digit is ``not_a_digit``. All answered, or none.

    Raises:
        PipelineError: ``queue_full``, ``inference_timeout``, or ``not_a_digit`` naming the first
            non-digit's position.
    """
    _ensure_room(batcher, len(inputs))
    answers = await asyncio.gather(*(infer_input(batcher, x, deadline) for x in inputs), return_exceptions=True)
    results = _all_answered(answers, "input")
    if reject:
        for index, result in enumerate(results):
            if not result.is_digit:
                error = not_a_digit(result, served.meta.calibration.threshold)
                raise PipelineError(error.code, f"input {index}: {error.message}")
    return results


def _ensure_room(batcher: MicroBatcher[R], count: int) -> None:
    room = batcher.room()
    if room < count:
        raise queue_full(QueueFullError(f"room for {room} more images"))


def _all_answered(answers: Sequence[T | BaseException], what: str) -> list[T]:
    """``answers`` if none is an error; else the first error, a pipeline error naming its position."""
    for index, answer in enumerate(answers):
        if isinstance(answer, PipelineError):
            raise PipelineError(answer.code, f"{what} {index}: {answer.message}") from answer
        if isinstance(answer, BaseException):
            raise answer
    return [answer for answer in answers if not isinstance(answer, BaseException)]


async def preprocess(data: bytes, pre: Preprocessing, decoder: Decoder, deadline: Deadline) -> Prepared:
    """Decode and normalise ``data`` as the model was trained, in a decoder process
    (:mod:`app.decoding`), waiting for one at most until ``deadline``.

    Raises:
        PipelineError: the codes of :class:`model.preprocess.ImageError`, or ``inference_timeout``
            (the deadline, or the most time one picture may take to decode, passed).
    """
    try:
        return await decoder.prepare(data, pre, deadline.remaining())
    except ImageError as exc:
        raise PipelineError(exc.code, str(exc)) from None
    except DecodeTimeoutError as exc:
        if not exc.by_decode_limit:
            raise deadline.missed() from None
        message = f"decoding the picture took more than {decoder.timeout_s} s, the most one picture may take"
        raise PipelineError("inference_timeout", message) from None


async def infer(batcher: MicroBatcher[R], prepared: Prepared, deadline: Deadline) -> R:
    """Queue one input on ``batcher`` and wait for its result, at most until ``deadline``.

    Raises:
        PipelineError: ``queue_full`` (back-pressure) or ``inference_timeout``.
    """
    return await infer_input(batcher, prepared.model_input, deadline)


async def infer_input(batcher: MicroBatcher[R], model_input: np.ndarray, deadline: Deadline) -> R:
    """:func:`infer` for one model input (C, S, S) that needs no preprocessing.

    Raises:
        PipelineError: ``queue_full`` (back-pressure) or ``inference_timeout``.
    """
    try:
        return await batcher.submit(model_input, deadline.remaining())
    except QueueFullError as exc:
        raise queue_full(exc) from exc
    except TimeoutError:
        raise deadline.missed() from None


def queue_full(exc: QueueFullError) -> PipelineError:
    return PipelineError("queue_full", f"the server is at capacity ({exc}); retry shortly")


def not_a_digit(result: Prediction, threshold: float | None) -> PipelineError:
    """``not_a_digit`` for a picture whose digit score is below the model's threshold."""
    return PipelineError(
        "not_a_digit",
        f"the picture does not look like a digit: digit score {result.digit_score:.3f} is below the model's "
        f"threshold {threshold:.3f}; send a single handwritten or typed digit (or leave reject off to get the "
        f"prediction with is_digit=false)",
    )
