"""From logits to an answer a caller can act on: calibrated probabilities and a not-a-digit verdict.

Both are fitted after training on validation data (``python -m training trust``) and stored in the
checkpoint's metadata, so that every consumer of a checkpoint (the service, the evaluation)
reads the same numbers:

- ``temperature``: the logits are divided by it before the softmax (temperature scaling, Guo et
  al. 2017), fitted by minimising the negative log-likelihood on the validation digits, so that a
  confidence of 0.9 is right about 90% of the time;
- ``score`` and ``threshold``: how digit-like the input is, from the raw logits, and the value
  below which it is called "not a digit" (chosen on validation digits and validation non-digits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

Score = Literal["energy", "max_logit", "msp"]
SCORES: tuple[Score, ...] = ("energy", "max_logit", "msp")


def digit_scores(logits: torch.Tensor, score: Score, temperature: float = 1.0) -> torch.Tensor:
    """Per-row digit-likeness, higher = more digit-like.

    ``energy``: the negative free energy ``logsumexp(logits)`` (Liu et al. 2020); ``max_logit``: the
    largest logit; ``msp``: the largest calibrated probability (Hendrycks & Gimpel 2017).
    """
    logits = logits.float()
    if score == "energy":
        return torch.logsumexp(logits, dim=-1)
    if score == "max_logit":
        return logits.amax(dim=-1)
    return (logits / temperature).softmax(dim=-1).amax(dim=-1)


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

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities (B, classes)."""
        return (logits.float() / self.temperature).softmax(dim=-1)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """The digit score (B,) the verdict is decided from."""
        return digit_scores(logits, self.score, self.temperature)

    def is_digit(self, scores: torch.Tensor) -> torch.Tensor:
        """The verdict (B,) for digit scores; all True when no threshold was fitted."""
        if self.threshold is None:
            return torch.ones_like(scores, dtype=torch.bool)
        return scores >= self.threshold

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
