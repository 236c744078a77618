"""Prometheus metrics, in a registry of the app's own (several apps can live in one process).

Under several worker processes (``PROMETHEUS_MULTIPROC_DIR`` set, see :mod:`app.server`), every
process writes its values to files in that directory, and ``/metrics`` serves what
prometheus_client's ``MultiProcessCollector`` adds up from all of them: the totals of the whole
server, whichever worker answers the scrape.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

# The request methods of HTTP (RFC 9110 and PATCH); any other counts as "other", so that a client
# sending made-up methods cannot add label values without bound
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def method_label(method: str) -> str:
    """The ``method`` label of a request: its method if standard, else ``other``."""
    return method if method in HTTP_METHODS else "other"


def multiprocess_dir() -> str | None:
    """The directory of prometheus_client's multiprocess mode, if this process is in it."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """The service's metrics: requests, latency, batch sizes, queue depth, inference time.

    ``registry`` is what ``/metrics`` serves: the metrics themselves in one process, the sum over
    every worker's files in multiprocess mode.
    """

    def __init__(self) -> None:
        directory = multiprocess_dir()
        self.registry = CollectorRegistry()
        own = self.registry if directory is None else CollectorRegistry()
        if directory is not None:
            MultiProcessCollector(self.registry, path=directory)
        self.requests = Counter(
            "vit_digits_requests_total",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=own,
        )
        self.latency = Histogram(
            "vit_digits_request_seconds", "HTTP request latency", ["route"], buckets=LATENCY_BUCKETS, registry=own
        )
        self.batch_size = Histogram(
            "vit_digits_batch_size", "images per forward pass", ["model", "kind"], buckets=BATCH_BUCKETS, registry=own
        )
        self.inference = Histogram(
            "vit_digits_inference_seconds",
            "forward-pass time per batch",
            ["model", "kind"],
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        # the images waiting in every live worker: a worker that exits takes its queue with it
        self.queue_depth = Gauge(
            "vit_digits_queue_depth",
            "images waiting for a batch",
            ["model", "kind"],
            registry=own,
            multiprocess_mode="livesum",
        )
