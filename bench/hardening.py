"""The figures of issue #13 ("Hardening"), measured in one run of a minute or two on this machine.

  1. CPU time to preprocess big pictures the service's way (pixel caps, reduced decoding), beside
     the old way (full-size decoding, no cap for lossless formats) for the same 5000x5000 PNG;
  2. a live ``python -m app`` with 2 workers (the shipped model, default settings): the workers'
     memory before, at the peak of, and after 16 concurrent requests with the biggest PNG the caps
     admit; a batch request of 64 such pictures against the deadline; 20 connections each sending
     an unterminated 25 MB header line;
  3. a live one-worker server (so that /metrics counts every request): 200 clients that disconnect
     mid-upload, counted by status;
  4. a server with an unloadable checkpoint, one and two workers: exit status and time.

    .venv/bin/python bench/hardening.py [--checkpoint checkpoints/vit-digits.safetensors]

The schemathesis figures come from ``pytest -s tests/app/test_openapi_contract.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.settings import Settings  # noqa: E402
from model.preprocess import ImageError, load_image, open_image, prepare  # noqa: E402
from tests.servers import free_port, run_app, start_app, wait_ready  # noqa: E402

SIDE = 5000
CAPPED_SIDE = 3162  # the biggest square PNG under the default 10-megapixel full-decode cap


def picture(width: int, height: int, mode: str, fmt: str) -> bytes:
    """Dark ink on light paper: a thick bar, saved as ``mode`` in ``fmt``; RGBA is a transparent
    canvas with an opaque stroke."""
    gray = np.full((height, width), 235, np.uint8)
    gray[height // 5 : 4 * height // 5, width // 2 - width // 30 : width // 2 + width // 30] = 20
    if mode == "RGBA":
        rgba = np.zeros((height, width, 4), np.uint8)
        rgba[..., 3] = 255 - gray
        image = Image.fromarray(rgba, "RGBA")
    else:
        image = Image.fromarray(gray).convert(mode)
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def cpu_s(fn: Callable[[], object], repeat: int = 3) -> float:
    """Median CPU time of ``fn`` in this process."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def service_way(data: bytes, settings: Settings) -> str:
    try:
        prepare(load_image(open_image(data, settings.max_image_pixels, settings.max_full_decode_pixels)))
        return "answered"
    except ImageError as exc:
        return exc.code


def old_way(data: bytes) -> None:
    prepare(load_image(open_image(data, 25_000_000, 25_000_000), working_side=None))


def cpu_figures() -> None:
    settings = Settings()
    print("## 1. CPU time per picture, preprocessing in this process (median of 3)")
    big_png = picture(SIDE, SIDE, "RGB", "PNG")
    old = cpu_s(lambda: old_way(big_png))
    print(f"5000x5000 RGB PNG ({len(big_png) // 1000} kB), old way (full size, no lossless cap): {old:.3f} s")
    for label, data in [
        (f"{SIDE}x{SIDE} RGB PNG", big_png),
        (f"{SIDE}x{SIDE} L PNG", picture(SIDE, SIDE, "L", "PNG")),
        (f"{SIDE}x{SIDE} JPEG", picture(SIDE, SIDE, "RGB", "JPEG")),
        (f"{CAPPED_SIDE}x{CAPPED_SIDE} RGB PNG", picture(CAPPED_SIDE, CAPPED_SIDE, "RGB", "PNG")),
        (f"{CAPPED_SIDE}x{CAPPED_SIDE} RGBA PNG", picture(CAPPED_SIDE, CAPPED_SIDE, "RGBA", "PNG")),
        (f"{CAPPED_SIDE}x{CAPPED_SIDE} L PNG", picture(CAPPED_SIDE, CAPPED_SIDE, "L", "PNG")),
    ]:
        outcome = service_way(data, settings)
        print(f"{label}, service: {cpu_s(lambda d=data: service_way(d, settings)):.3f} s ({outcome})")


@contextmanager
def server(checkpoint: Path, workers: int, **env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = start_app(checkpoint, port, workers=workers, stdout=None, stderr=None, VIT_DIGITS_LOG_LEVEL="warning", **env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        time.sleep(1)  # the second worker too
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def worker_pids(parent: int) -> list[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(pid) for pid in children] or [parent]  # gunicorn's workers, or the one server process itself


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


class PeakRss:
    """Samples the summed RSS of ``pids`` every 10 ms in a thread; ``peak`` is the highest seen."""

    def __init__(self, pids: list[int]):
        self.pids, self.peak, self._stop = pids, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pids))
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


async def post_many(base: str, data: bytes, count: int, content_type: str) -> list[int]:
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=httpx.Limits(max_connections=count)) as c:
        answers = await asyncio.gather(
            *(c.post("/v1/predict", content=data, headers={"content-type": content_type}) for _ in range(count))
        )
    return [r.status_code for r in answers]


def memory_and_batch(checkpoint: Path) -> None:
    # h11: the parser that enforces VIT_DIGITS_MAX_HEADER_BYTES (httptools, the default, does not)
    with server(checkpoint, workers=2, VIT_DIGITS_HTTP="h11") as (base, proc):
        pids = worker_pids(proc.pid)
        print(f"\n## 2. python -m app, {len(pids)} workers, default settings but the h11 parser")
        for label, data, kind in [
            (f"{CAPPED_SIDE}x{CAPPED_SIDE} RGBA PNG", picture(CAPPED_SIDE, CAPPED_SIDE, "RGBA", "PNG"), "image/png"),
            (f"{SIDE}x{SIDE} JPEG", picture(SIDE, SIDE, "RGB", "JPEG"), "image/jpeg"),
            (f"{SIDE}x{SIDE} RGB PNG", picture(SIDE, SIDE, "RGB", "PNG"), "image/png"),
        ]:
            before = rss_mb(pids)
            with PeakRss(pids) as peak:
                started = time.monotonic()
                codes = asyncio.run(post_many(base, data, 16, kind))
                took = time.monotonic() - started
            time.sleep(1.0)
            after = rss_mb(pids)
            statuses = ", ".join(f"{codes.count(c)}x{c}" for c in sorted(set(codes)))
            print(
                f"16 concurrent {label}: workers {before:.0f} MB before, peak +{peak.peak - before:.0f} MB, "
                f"after +{after - before:.0f} MB; {statuses} in {took:.1f} s"
            )
        batch = picture(CAPPED_SIDE, CAPPED_SIDE, "RGB", "PNG")
        files = [("files", (f"{i}.png", batch, "image/png")) for i in range(64)]
        started = time.monotonic()
        r = httpx.post(base + "/v1/predict/batch", files=files, timeout=120)
        took = time.monotonic() - started
        results = r.json()["results"]
        answered = sum(1 for x in results if x["prediction"])
        late = sum(1 for x in results if x["error"] and x["error"]["code"] == "inference_timeout")
        print(
            f"batch of 64 {CAPPED_SIDE}x{CAPPED_SIDE} RGB PNGs ({len(batch) * 64 // 1000} kB): status {r.status_code} "
            f"after {took:.1f} s (deadline {Settings().request_timeout_s:.0f} s): {answered} answered, {late} timed out"
        )
        port = int(base.rsplit(":", 1)[1])
        before = rss_mb(pids)
        started = time.monotonic()
        answers = [endless_header(port, 25) for _ in range(20)]
        took = time.monotonic() - started
        closed = sum(a.startswith(b"HTTP/1.1 400 ") for a in answers)
        print(
            f"20 unterminated 25 MB header lines: workers {before:.0f} -> {rss_mb(pids):.0f} MB; "
            f"{closed} of 20 answered 400 and closed, in {took:.1f} s"
        )


def endless_header(port: int, megabytes: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        try:
            for _ in range(megabytes * 16):
                s.sendall(b"a" * 65536)
        except OSError:
            pass
        received = b""
        try:
            while chunk := s.recv(65536):
                received += chunk
        except OSError:
            pass
        return received


def disconnects(checkpoint: Path) -> None:
    with server(checkpoint, workers=1) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
        for _ in range(200):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(head + b"\x89PNG" + b"\0" * 5000)
        time.sleep(1.0)
        metrics = httpx.get(base + "/metrics").text
        counts = {}
        for status in ("499", "500"):
            pattern = rf'requests_total\{{method="POST",route="/v1/predict",status="{status}"\}} ([\d.]+)'
            counts[status] = sum(float(n) for n in re.findall(pattern, metrics))
        closed, failed = counts["499"], counts["500"]
        print(f"\n## 3. 200 clients disconnecting mid-upload: {closed:.0f} counted as 499, {failed:.0f} as 500")


def unloadable() -> None:
    print("\n## 4. an unloadable checkpoint")
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "broken.safetensors").write_bytes(b"garbage")
        for workers in (1, 2):
            started = time.monotonic()
            done = run_app(Path(folder), workers=workers)
            lines = done.stderr.decode(errors="replace").splitlines()
            reason = next((line for line in reversed(lines) if "model loading failed" in line), "")[:200]
            print(
                f"{workers} worker(s): exit status {done.returncode} after {time.monotonic() - started:.1f} s; "
                f"says: {reason}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "vit-digits.safetensors")
    args = parser.parse_args()
    cpu_figures()
    memory_and_batch(args.checkpoint)
    disconnects(args.checkpoint)
    unloadable()


if __name__ == "__main__":
    main()
