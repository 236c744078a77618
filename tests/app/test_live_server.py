"""Against a real uvicorn process on loopback."""

import asyncio
import json
import re
import time

import httpx
import numpy as np
import pytest

from tests.app.conftest import png_bytes

pytestmark = pytest.mark.slow  # each test starts a server process


PNG = {"content-type": "image/png"}


def test_live_concurrent_requests_are_batched_and_all_correct(live_server, digit_png):
    expected = httpx.post(f"{live_server}/v1/predict", content=digit_png, headers=PNG).json()["probabilities"]
    blank = png_bytes(np.zeros((20, 20), np.uint8))

    async def main():
        async with httpx.AsyncClient(
            base_url=live_server, timeout=30, limits=httpx.Limits(max_connections=64)
        ) as client:
            good = [client.post("/v1/predict", content=digit_png, headers=PNG) for _ in range(96)]
            bad = [client.post("/v1/predict", content=b"junk", headers=PNG) for _ in range(8)]
            bad += [client.post("/v1/predict", content=blank, headers=PNG) for _ in range(8)]
            return await asyncio.gather(*good), await asyncio.gather(*bad)

    good, bad = asyncio.run(main())
    assert [r.status_code for r in good] == [200] * 96
    assert all(r.json()["probabilities"] == expected for r in good)
    assert sorted({r.status_code for r in bad}) == [415, 422]
    metrics = httpx.get(f"{live_server}/metrics").text
    buckets = dict(
        re.findall(r'vit_digits_batch_size_bucket\{kind="predict",le="([\d.]+)",model="tiny"\} ([\d.]+)', metrics)
    )
    count = float(re.search(r'vit_digits_batch_size_count\{kind="predict",model="tiny"\} ([\d.]+)', metrics).group(1))
    assert float(buckets["1.0"]) < count, "no batch held more than one image"


def test_live_streamed_body_over_the_limit_is_cut_off(live_server, digit_png):
    def chunks():
        for _ in range(100):
            yield b"\x89PNG" + b"\0" * 10_000  # 1 MB in chunks, no Content-Length; the limit is 200 kB

    r = httpx.post(f"{live_server}/v1/predict", content=chunks(), headers=PNG, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert httpx.post(f"{live_server}/v1/predict", content=digit_png, headers=PNG).status_code == 200


def test_live_healthz_readyz_and_json_logs(live_server, live_server_log):
    assert httpx.get(f"{live_server}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{live_server}/readyz").json() == {"status": "ready"}
    # an answer >= 400 is logged at info level, with the request id it was sent with
    assert httpx.get(f"{live_server}/nope", headers={"X-Request-ID": "json-logs-check"}).status_code == 404
    deadline = time.monotonic() + 5  # the access log is written once the answer has been sent
    while "json-logs-check" not in live_server_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    entries = [json.loads(line) for line in live_server_log.read_text().splitlines()]  # every line is JSON
    (entry,) = [e for e in entries if e["request_id"] == "json-logs-check"]
    assert (entry["logger"], entry["level"], entry["message"]) == ("app.access", "info", "request")
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/nope", 404)
    assert any(e["logger"] == "app.registry" and e["message"] == "loaded model" for e in entries)


def test_live_client_disconnecting_mid_upload_is_counted_as_499_not_500(live_server):
    import socket

    port = int(live_server.rsplit(":", 1)[1])
    for path, kind in [("/v1/predict", "image/png"), ("/v1/predict/batch", "multipart/form-data; boundary=b")] * 5:
        with socket.create_connection(("127.0.0.1", port)) as s:
            head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\nContent-Length: 100000\r\n\r\n"
            s.sendall(head.encode())
            part = b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'
            s.sendall(part + b"x" * 5000)  # a twentieth of what it announced, then gone
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{live_server}/metrics").text
        closed = re.findall(r'vit_digits_requests_total\{method="POST",route="[^"]+",status="499"\} ([\d.]+)', metrics)
        if sum(float(n) for n in closed) >= 10:
            break
        time.sleep(0.1)
    assert sum(float(n) for n in closed) == 10, metrics
    assert 'status="500"' not in metrics
