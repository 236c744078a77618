"""The serving process's own limits, over real sockets: header size (h11), idle keep-alive
connections, open connections, and a model that cannot load (in one worker and with several).

What uvicorn does not bound (the time a client takes to send its header, a connection that never
sends a byte, slow uploads) the load balancer in front bounds; see docs/DEPLOY.md."""

from __future__ import annotations

import socket
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import serve
from tests.servers import run_app

pytestmark = pytest.mark.slow  # each test starts a server process


LIMITS = {
    "VIT_DIGITS_HTTP": "h11",
    "VIT_DIGITS_MAX_HEADER_BYTES": "16384",
    "VIT_DIGITS_KEEP_ALIVE_S": "1",
    "VIT_DIGITS_MAX_CONNECTIONS": "4",
}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def send_endless_header(port: int, megabytes: int) -> bytes:
    """Send a header line that never ends, ``megabytes`` of it at most; what came back before the
    server closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        try:
            for _ in range(megabytes * 16):
                s.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_until_closed(s)


def read_until_closed(s: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := s.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


@pytest.fixture(scope="module")
def limited_server(tiny_checkpoint: Path):
    with serve(tiny_checkpoint, **LIMITS) as (base, proc):
        yield base, proc


def test_server_oversized_header_gets_400_closed_and_memory_stays_flat(limited_server):
    base, proc = limited_server
    port = int(base.rsplit(":", 1)[1])
    httpx.get(base + "/healthz")
    before = rss_mb(proc.pid)
    answers = [send_endless_header(port, megabytes=4) for _ in range(20)]
    assert all(a.startswith(b"HTTP/1.1 400 ") for a in answers), answers[0][:200]
    assert rss_mb(proc.pid) - before < 20, f"RSS {before:.0f} -> {rss_mb(proc.pid):.0f} MB"
    assert httpx.get(base + "/healthz").status_code == 200


def test_server_idle_keep_alive_connection_is_closed(limited_server):
    base, _ = limited_server
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        answer = read_until_closed(s)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert 0.8 < time.monotonic() - started < 5


def test_server_requests_beyond_the_open_connections_limit_get_503(limited_server):
    base, _ = limited_server
    port = int(base.rsplit(":", 1)[1])
    with ExitStack() as stack:
        for _ in range(4):  # connected, sending nothing
            stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
        time.sleep(0.2)
        assert httpx.get(base + "/healthz").status_code == 503
    deadline = time.monotonic() + 5  # once they are gone, requests are served again
    while httpx.get(base + "/healthz").status_code != 200:
        assert time.monotonic() < deadline


@pytest.mark.parametrize(
    ("workers", "env"),
    [
        (1, {}),
        (1, {"VIT_DIGITS_LOAD_BEFORE_LISTEN": "true"}),
        (2, {}),
    ],
)
def test_server_exits_non_zero_with_the_reason_when_no_model_loads(tmp_path, workers, env):
    (tmp_path / "broken.safetensors").write_bytes(b"garbage")
    done = run_app(tmp_path, workers=workers, **env)
    assert done.returncode != 0
    assert b"model loading failed" in done.stderr and b"broken.safetensors" in done.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_app(empty, workers=workers, **env)
    assert done.returncode != 0 and b"no *.safetensors or *.onnx file" in done.stderr


def test_server_empty_api_key_is_a_startup_error(tiny_checkpoint):
    done = run_app(tiny_checkpoint, VIT_DIGITS_API_KEY="")
    assert done.returncode == 1 and b"VIT_DIGITS_API_KEY is set but empty" in done.stderr
