"""Steady load on ``/v1/predict``: real MNIST test digits POSTed at a fixed concurrency until told
to stop (SIGTERM or SIGINT) or for ``--seconds``; every failed request is counted.

A request fails if it gets no answer (connection refused or reset, timeout) or any status but 200.
With ``--new-connections`` every request opens a connection of its own (a new client's view);
else they reuse ``--concurrency`` keep-alive connections. On stop no new request is sent and
those in flight are waited for, so stopping fails none. Prints one JSON line (and writes it to
``--report``); exits 1 if any request failed.

    python tests/docker/load.py http://127.0.0.1:8000 --concurrency 12 --report /tmp/load.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import json
import signal
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from training.data import load_split, prepare_root  # noqa: E402


def digit_pngs(count: int) -> list[tuple[bytes, int]]:
    """The first ``count`` MNIST test digits as PNG files, with their labels."""
    test = load_split(prepare_root(ROOT / "tests" / "data" / "mnist"), train=False)
    pngs = []
    for i in range(min(count, len(test.labels))):
        buf = io.BytesIO()
        Image.fromarray(test.images[i].numpy()).save(buf, "PNG")
        pngs.append((buf.getvalue(), int(test.labels[i])))
    return pngs


class Tally:
    """What the load saw: answers, failures by cause (with when they happened), latencies."""

    def __init__(self, ready_file: Path | None = None) -> None:
        self.ready_file = ready_file  # touched once the first answer is in
        self.started = time.monotonic()
        self.ok = 0
        self.wrong_digit = 0
        self.failures: collections.Counter[str] = collections.Counter()
        self.failure_times: list[float] = []
        self.latencies: list[float] = []

    def fail(self, cause: str) -> None:
        self.failures[cause] += 1
        self.failure_times.append(round(time.monotonic() - self.started, 2))

    def summary(self) -> dict[str, object]:
        lat = sorted(self.latencies) or [0.0]
        failed = sum(self.failures.values())
        return {
            "requests": self.ok + failed,
            "ok": self.ok,
            "failed": failed,
            "failures": dict(self.failures),
            "failure_times_s": self.failure_times[:20],
            "wrong_digit": self.wrong_digit,
            "seconds": round(time.monotonic() - self.started, 1),
            "p50_ms": round(1000 * lat[len(lat) // 2], 1),
            "p99_ms": round(1000 * lat[int(len(lat) * 0.99)], 1),
            "max_ms": round(1000 * lat[-1], 1),
        }


async def worker(
    client: httpx.AsyncClient, pngs: list[tuple[bytes, int]], offset: int, stop: asyncio.Event, tally: Tally
) -> None:
    """POST digits one after another until ``stop`` is set."""
    i = offset
    while not stop.is_set():
        png, label = pngs[i % len(pngs)]
        i += 1
        start = time.monotonic()
        try:
            r = await client.post("/v1/predict", content=png, headers={"content-type": "image/png"})
        except httpx.HTTPError as exc:
            tally.fail(type(exc).__name__)
            continue
        if r.status_code != 200:
            tally.fail(f"HTTP {r.status_code}")
            continue
        tally.ok += 1
        if tally.ok == 1 and tally.ready_file is not None:
            tally.ready_file.touch()  # the load is flowing: whoever waits for it may start
        tally.latencies.append(time.monotonic() - start)
        tally.wrong_digit += r.json()["digit"] != label


async def run(
    base: str,
    concurrency: int,
    seconds: float,
    report: Path | None,
    new_connections: bool = False,
    ready_file: Path | None = None,
) -> dict[str, object]:
    pngs = digit_pngs(200)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if seconds > 0:
        loop.call_later(seconds, stop.set)
    tally = Tally(ready_file)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0 if new_connections else concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        await asyncio.gather(*(worker(client, pngs, k * 17, stop, tally) for k in range(concurrency)))
    summary = tally.summary()
    line = json.dumps(summary)
    print(line, flush=True)
    if report is not None:
        report.write_text(line + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the service's URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: on SIGTERM/SIGINT only)")
    parser.add_argument("--report", type=Path, help="also write the JSON summary here")
    parser.add_argument("--new-connections", action="store_true", help="a new connection for every request")
    parser.add_argument("--ready-file", type=Path, help="touched once the first answer is in")
    args = parser.parse_args()
    summary = asyncio.run(
        run(args.base, args.concurrency, args.seconds, args.report, args.new_connections, args.ready_file)
    )
    sys.exit(1 if summary["failed"] else 0)


if __name__ == "__main__":
    main()
