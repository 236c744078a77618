"""Fuzzing the decoders over HTTP: a seeded corpus of mutated PNG, JPEG, GIF, WebP, TIFF and BMP
files (tests/fuzz_corpus.py) against a real server. No answer may be a 5xx or come later than the
deadline + 1 s, the server must stay up, and the memory of the server and its decoder processes
must stay flat."""

from __future__ import annotations

import collections
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.app.conftest import serve
from tests.fuzz_corpus import corpus
from tests.processes import tree_rss_mb

pytestmark = pytest.mark.slow

CASES = 4000  # about 30 s on a busy 2-core machine
BATCH_EVERY = 20  # every 20th request sends the next 8 cases as one batch
CLIENTS = 4
DEADLINE_S = 3.0
SERVER = {"VIT_DIGITS_REQUEST_TIMEOUT_S": str(DEADLINE_S), "VIT_DIGITS_DECODE_TIMEOUT_S": "2"}
TYPES = {"png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp", "tiff": "image/tiff",
         "bmp": "image/bmp"}  # fmt: skip
# what a server may keep after thousands of pictures: allocator caches, a decoder replaced by a
# fresh one; a leak of even a kilobyte a picture would pass it
FLAT_MB = 40


@pytest.fixture(scope="module")
def digit(mnist_root: Path) -> np.ndarray:
    from training.data import load_split

    return load_split(mnist_root, train=False).images[1].numpy()


def _send(client: httpx.Client, base: str, cases: list[tuple[str, bytes]]) -> tuple[list[str], int, float, str]:
    """One request: a single case to /v1/predict, or several as a batch. (names, status, seconds, body)"""
    started = time.monotonic()
    if len(cases) == 1:
        name, data = cases[0]
        kind = TYPES[name.split()[0]]
        r = client.post(base + "/v1/predict", content=data, headers={"content-type": kind})
    else:
        files = [("files", (f"{i}", data, TYPES[name.split()[0]])) for i, (name, data) in enumerate(cases)]
        r = client.post(base + "/v1/predict/batch", files=files)
    return [name for name, _ in cases], r.status_code, time.monotonic() - started, r.text[:300]


def _requests(digit: np.ndarray) -> list[list[tuple[str, bytes]]]:
    cases = list(corpus(digit, CASES, seed=32))
    requests, index = [], 0
    while index < len(cases):
        take = 8 if len(requests) % BATCH_EVERY == BATCH_EVERY - 1 else 1
        requests.append(cases[index : index + take])
        index += take
    return requests


def test_fuzzed_pictures_get_no_5xx_in_time_and_memory_stays_flat(tiny_checkpoint, digit):
    requests = _requests(digit)
    with serve(tiny_checkpoint, **SERVER) as (base, proc), httpx.Client(timeout=60) as client:
        for data in [case for request in requests[:40] for case in request]:  # warm-up: every path once
            client.post(base + "/v1/predict", content=data[1], headers={"content-type": TYPES[data[0].split()[0]]})
        before = tree_rss_mb(proc.pid)
        started = time.monotonic()
        with ThreadPoolExecutor(CLIENTS) as pool:
            answers = list(pool.map(lambda cases: _send(client, base, cases), requests))
        elapsed = time.monotonic() - started
        after = tree_rss_mb(proc.pid)
        assert proc.poll() is None and client.get(base + "/healthz").status_code == 200
    statuses = collections.Counter(status for _, status, _, _ in answers)
    print(
        f"{CASES} cases in {len(requests)} requests, {elapsed:.0f} s: {dict(sorted(statuses.items()))}; "
        f"slowest {max(s for _, _, s, _ in answers):.2f} s; server tree RSS {before:.0f} -> {after:.0f} MB"
    )
    failed = [(names, status, body) for names, status, _, body in answers if status >= 500]
    assert not failed, failed[:5]
    late = [(names, round(seconds, 2)) for names, _, seconds, _ in answers if seconds > DEADLINE_S + 1]
    assert not late, late[:5]
    assert after - before < FLAT_MB, f"{before:.0f} -> {after:.0f} MB"
