"""When a call is tried again, and for how long: the one policy of :class:`Client` and :class:`AsyncClient`.

A 503 (the server at capacity, or still loading) is tried again after its ``Retry-After``, with up to
half as much again of random jitter, so that callers turned away together do not all come back in
the same instant. A connection that cannot be made, or breaks before the answer, is tried again
after an exponential backoff with full jitter (predictions change nothing on the server, so a
request that may have reached it is safe to send again). Nothing is tried past the call's deadline,
and a 4xx is never tried again: the same request would be refused the same way.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import httpx

from vit_digits_client.errors import ConnectionFailed, DeadlineExceeded, Overloaded, VitDigitsError

RETRIED_NETWORK_ERRORS = (httpx.NetworkError, httpx.RemoteProtocolError)  # refused, reset, closed mid-answer


@dataclass(frozen=True)
class RetryPolicy:
    """How calls are tried again.

    Args:
        timeout: seconds a call may take in all, retries and waits included (its deadline).
        backoff: the first backoff after a connection error, in seconds; it doubles with each
            further one, up to ``max_backoff``, and the wait is drawn uniformly below it.
        max_backoff: the longest backoff, in seconds.
    """

    timeout: float = 30.0
    backoff: float = 0.1
    max_backoff: float = 2.0

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.backoff <= 0 or self.max_backoff < self.backoff:
            raise ValueError("timeout and backoff must be positive, and max_backoff at least backoff")


@dataclass
class Attempts:
    """One call's tries: its deadline, and how long to wait before the next try (or the error to end with)."""

    policy: RetryPolicy
    rng: random.Random = field(default_factory=random.Random)
    deadline: float = 0.0
    failures: int = 0
    last_error: VitDigitsError | None = None  # why the last try failed: what the call ends in at its deadline

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.policy.timeout

    def remaining(self) -> float:
        """Seconds left until the deadline (the next try's timeout).

        Raises:
            VitDigitsError: none are left: the last try's error, or DeadlineExceeded.
        """
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.last_error or DeadlineExceeded(
                f"no answer within the call's deadline of {self.policy.timeout} s"
            )
        return left

    def after_network_error(self, exc: httpx.TransportError) -> float:
        """The wait before trying again after ``exc``.

        Raises:
            DeadlineExceeded: a timeout (each try's timeout is what is left of the deadline).
            ConnectionFailed: an error that another try would not mend, or no time left for one.
        """
        if isinstance(exc, httpx.TimeoutException):
            raise DeadlineExceeded(f"no answer within the call's deadline of {self.policy.timeout} s") from exc
        if not isinstance(exc, RETRIED_NETWORK_ERRORS):
            raise ConnectionFailed(f"cannot reach the server: {exc!r}") from exc
        self.failures += 1
        ceiling = min(self.policy.max_backoff, self.policy.backoff * 2 ** (self.failures - 1))
        return self._fitting(self.rng.uniform(0, ceiling), ConnectionFailed(f"cannot reach the server: {exc!r}"))

    def after_overload(self, retry_after: str | None, error: Overloaded) -> float:
        """The wait before trying again after a 503 that said ``Retry-After`` (seconds), plus jitter.

        Raises:
            Overloaded: ``error``, if the wait would end past the deadline.
        """
        try:
            wait = max(float(retry_after or ""), 0.0)
        except ValueError:  # absent, or an HTTP date: back off as after a connection error
            self.failures += 1
            wait = min(self.policy.max_backoff, self.policy.backoff * 2 ** (self.failures - 1))
        return self._fitting(wait * (1 + self.rng.random() / 2), error)

    def _fitting(self, wait: float, error: VitDigitsError) -> float:
        """``wait`` if a try after it still ends before the deadline; else ``error`` is raised."""
        self.last_error = error
        if time.monotonic() + wait >= self.deadline:
            raise error
        return wait
