"""From logits to an answer a caller can act on: calibrated probabilities and a not-a-digit verdict.

Both are fitted after training on validation data (``python -m training trust``) and stored in the
checkpoint's metadata, so that every consumer of a checkpoint (the service, the evaluation)
reads the same numbers:

- ``temperature``: the logits are divided by it before the softmax (temperature scaling, Guo et
  al. 2017), fitted by minimising the negative log-likelihood on the validation digits, so that a
  confidence of 0.9 is right about 90% of the time;
- ``score`` and ``threshold``: how digit-like the input is, from the raw logits, and the value
  below which it is called "not a digit" (chosen on validation digits and validation non-digits).

NumPy only: the serving process applies it without torch. Arrays of logits are (B, classes); a
CPU torch tensor is accepted too (it is read as an array).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

Score = Literal["energy", "max_logit", "msp"]
SCORES: tuple[Score, ...] = ("energy", "max_logit", "msp")


def softmax(logits: ArrayLike) -> NDArray[np.float32]:
    """Row-wise softmax, computed stably (the row maximum subtracted first)."""
    x = np.asarray(logits, dtype=np.float32)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def digit_scores(logits: ArrayLike, score: Score, temperature: float = 1.0) -> NDArray[np.float32]:
    """Per-row digit-likeness, higher = more digit-like.

    ``energy``: the negative free energy ``logsumexp(logits)`` (Liu et al. 2020); ``max_logit``: the
    largest logit; ``msp``: the largest calibrated probability (Hendrycks & Gimpel 2017).
    """
    x = np.asarray(logits, dtype=np.float32)
    if score == "energy":
        top = x.max(axis=-1)
        shift = np.where(np.isfinite(top), top, 0)  # an infinite logit: the score is that infinity, not NaN
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return np.where(np.isfinite(top), shift + np.log(np.exp(x - shift[..., None]).sum(axis=-1)), top)
    if score == "max_logit":
        return x.max(axis=-1)
    return softmax(x / np.float32(temperature)).max(axis=-1)


@dataclass(frozen=True)
class Calibration:
    """Temperature and not-a-digit threshold of a checkpoint. The defaults (a checkpoint fitted by
    nothing) leave the softmax as it is and call every input a digit."""

    temperature: float = 1.0
    score: Score = "energy"
    threshold: float | None = None  # is_digit = score >= threshold; None: no verdict was fitted
    fitted: dict[str, Any] | None = None  # what it was fitted on, and the validation figures

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"calibration temperature must be a positive number; got {self.temperature}")
        if self.score not in SCORES:
            raise ValueError(f"calibration score must be one of {', '.join(SCORES)}; got {self.score!r}")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ValueError(f"calibration threshold must be a finite number; got {self.threshold}")

    def probabilities(self, logits: ArrayLike) -> NDArray[np.float32]:
        """Calibrated class probabilities (B, classes)."""
        return softmax(np.asarray(logits, dtype=np.float32) / np.float32(self.temperature))

    def scores(self, logits: ArrayLike) -> NDArray[np.float32]:
        """The digit score (B,) the verdict is decided from."""
        return digit_scores(logits, self.score, self.temperature)

    def is_digit(self, scores: ArrayLike) -> NDArray[np.bool_]:
        """The verdict (B,) for digit scores; all True when no threshold was fitted."""
        s = np.asarray(scores)
        if self.threshold is None:
            return np.ones(s.shape, dtype=bool)
        return s >= self.threshold

    def to_json(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "score": self.score,
            "threshold": self.threshold,
            "fitted": self.fitted,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        threshold = data.get("threshold")
        return cls(
            temperature=float(data.get("temperature", 1.0)),
            score=data.get("score", "energy"),
            threshold=None if threshold is None else float(threshold),
            fitted=data.get("fitted"),
        )
