"""``python -m app`` with several workers (gunicorn's arbiter, uvicorn workers), over real sockets:
a hung or dead worker is replaced, /metrics adds up over the workers, SIGTERM is bounded."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import wait_ready
from tests.processes import descendants
from tests.servers import Output, free_port, start_app

pytestmark = pytest.mark.slow  # each test starts a server of two workers


@contextmanager
def server(
    checkpoint: Path, port: int, workers: int = 2, stderr: Output = subprocess.DEVNULL, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m app`` on loopback; killed with every worker it left, whatever the test did."""
    proc = start_app(checkpoint, port, workers=workers, stderr=stderr, **env)
    seen: set[int] = set()
    try:
        yield proc
    finally:
        seen.update(children(proc.pid))
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=20)
        for pid in seen:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def children(parent: int) -> list[int]:
    """The worker processes of ``parent`` (gunicorn forks nothing else)."""
    try:
        return [int(pid) for pid in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # gone, or being reaped while we read
        return False
    return state != "Z"


def wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.2)


class Connection:
    """One keep-alive HTTP/1.1 connection, so that a test knows which worker serves it."""

    def __init__(self, port: int):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)

    def request(self, method: str, path: str, body: bytes = b"", content_type: str = "image/png") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nContent-Type: {content_type}\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + body)
        received = b""
        while b"\r\n\r\n" not in received:
            received += self._recv()
        header, rest = received.split(b"\r\n\r\n", 1)
        length = next(
            int(line.split(b":")[1]) for line in header.lower().split(b"\r\n") if line.startswith(b"content-length:")
        )
        while len(rest) < length:
            rest += self._recv()
        return int(header.split(b" ")[1]), rest

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        return chunk

    def worker(self, candidates: list[int]) -> int | None:
        """Which of ``candidates`` holds the server end of this connection (from /proc)."""
        client_port = self.sock.getsockname()[1]
        inode = None
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
            if local == self.port and remote == client_port:
                inode = fields[9]
        for pid in candidates:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                if fd.is_symlink() and os.readlink(fd) == f"socket:[{inode}]":
                    return pid
        return None


def one_connection_per_worker(
    port: int, pids: list[int], stack: ExitStack, timeout: float = 60
) -> dict[int, Connection]:
    """Keep-alive connections opened until each worker holds one (which worker accepts is up to them;
    one still loading its models accepts none)."""
    held: dict[int, Connection] = {}
    deadline = time.monotonic() + timeout
    while len(held) < len(pids):
        assert time.monotonic() < deadline, f"connections reached only {sorted(held)} of {pids}"
        connection = Connection(port)
        assert connection.request("GET", "/healthz")[0] == 200
        pid = connection.worker(pids)
        if pid is None or pid in held:
            connection.sock.close()
            for kept in held.values():  # within the keep-alive timeout, while a worker is loading
                assert kept.request("GET", "/healthz")[0] == 200
            time.sleep(0.05)
            continue
        held[pid] = stack.enter_context(_closing(connection))
    return held


@contextmanager
def _closing(connection: Connection) -> Iterator[Connection]:
    try:
        yield connection
    finally:
        connection.sock.close()


def requests_total(metrics: bytes, route: str) -> float:
    prefix = f'vit_digits_requests_total{{method="POST",route="{route}",status="200"}} '.encode()
    return sum(float(line[len(prefix) :]) for line in metrics.splitlines() if line.startswith(prefix))


def scrape_until(connection: Connection, route: str, count: float, timeout: float = 5) -> bytes:
    """/metrics through ``connection`` once its request total for ``route`` reaches ``count`` (a
    request is counted just after its response is sent, so the last one may still be on its way)."""
    deadline = time.monotonic() + timeout
    while True:
        status, metrics = connection.request("GET", "/metrics")
        assert status == 200
        if requests_total(metrics, route) >= count or time.monotonic() > deadline:
            return metrics
        time.sleep(0.05)


def test_workers_metrics_add_up_whichever_worker_answers_and_outlive_a_worker(tiny_checkpoint, digit_png):
    port = free_port()
    with server(tiny_checkpoint, port) as proc, ExitStack() as stack:
        wait_ready(lambda path: httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2))
        wait_for(lambda: len(children(proc.pid)) == 2)
        by_worker = one_connection_per_worker(port, children(proc.pid), stack)
        sent = 0
        for count, connection in zip((7, 13), by_worker.values(), strict=True):  # unequal shares
            for _ in range(count):
                assert connection.request("POST", "/v1/predict", digit_png)[0] == 200
            sent += count
        for connection in by_worker.values():
            metrics = scrape_until(connection, "/v1/predict", sent)
            assert requests_total(metrics, "/v1/predict") == sent
        assert b'vit_digits_queue_depth{kind="predict",model="tiny"} 0.0' in metrics

        leaving = next(iter(by_worker))  # a graceful exit (SIGTERM): gunicorn starts another
        os.kill(leaving, signal.SIGTERM)
        wait_for(lambda: len(children(proc.pid)) == 2 and leaving not in children(proc.pid))
        for connection in one_connection_per_worker(port, children(proc.pid), stack).values():
            metrics = scrape_until(connection, "/v1/predict", sent)
            assert requests_total(metrics, "/v1/predict") == sent  # its counts stay


def test_workers_a_hung_worker_is_replaced_and_a_dead_one_restarted(tiny_checkpoint, digit_png, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stale = tmp_path / "counter_999999.db"  # a previous server's counts: must not be added to this one's
    stale.write_bytes(b"\0" * 16)
    env = {"VIT_DIGITS_WORKER_TIMEOUT_S": "3", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with server(tiny_checkpoint, port, **env) as proc, ExitStack() as stack:
        wait_ready(lambda path: httpx.get(base + path, timeout=2))
        assert not stale.exists()
        wait_for(lambda: len(children(proc.pid)) == 2)
        # both serving: gunicorn times a worker from its first heartbeat, once its models are loaded
        one_connection_per_worker(port, children(proc.pid), stack)
        hung, other = children(proc.pid)
        gauges = tmp_path / f"gauge_livesum_{hung}.db"  # its queue depth, in prometheus_client's files
        assert gauges.exists()
        os.kill(hung, signal.SIGSTOP)
        stopped = time.monotonic()
        wait_for(lambda: not _alive(hung), timeout=20)
        assert time.monotonic() - stopped < 3 + 4, "not replaced within the worker timeout and the arbiter's check"
        wait_for(lambda: not gauges.exists(), timeout=5)  # marked dead: a gone worker's queue is not counted
        wait_for(lambda: len(children(proc.pid)) == 2)
        replacement = next(pid for pid in children(proc.pid) if pid != other)

        os.kill(other, signal.SIGKILL)
        wait_for(lambda: len(children(proc.pid)) == 2 and other not in children(proc.pid))
        with ExitStack() as stack:  # both new workers serve
            for connection in one_connection_per_worker(port, children(proc.pid), stack).values():
                assert connection.request("POST", "/v1/predict", digit_png)[0] == 200
        assert replacement in children(proc.pid)


def test_workers_do_not_outlive_a_killed_arbiter(tiny_checkpoint):
    port = free_port()
    with server(tiny_checkpoint, port, VIT_DIGITS_WORKER_TIMEOUT_S="2") as proc:
        wait_ready(lambda path: httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2))
        wait_for(lambda: len(children(proc.pid)) == 2)
        everything = descendants(proc.pid)  # the workers and their decoder processes
        proc.kill()  # SIGKILL: no chance to stop its workers itself
        proc.wait(timeout=10)
        wait_for(lambda: not any(_alive(pid) for pid in everything), timeout=20)


def test_workers_each_have_their_own_decoders_and_no_process_outlives_the_server(tiny_checkpoint):
    """Per worker: a fork server, multiprocessing's resource tracker and one decoder process. A
    worker killed outright takes its decoders with it; SIGTERM leaves no process behind."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with server(tiny_checkpoint, port) as proc:
        wait_ready(lambda path: httpx.get(base + path, timeout=2))
        wait_for(lambda: len(children(proc.pid)) == 2)
        workers = children(proc.pid)
        wait_for(lambda: all(len(descendants(worker)) == 3 for worker in workers), timeout=20)
        killed, helpers = workers[0], descendants(workers[0])
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: not any(_alive(pid) for pid in helpers), timeout=20)
        wait_for(lambda: len(children(proc.pid)) == 2 and killed not in children(proc.pid))
        wait_for(lambda: len(descendants(proc.pid)) == 2 + 2 * 3, timeout=30)  # the replacement's too
        everything = descendants(proc.pid)
        proc.terminate()
        assert proc.wait(timeout=20) == 0
        wait_for(lambda: not any(_alive(pid) for pid in everything), timeout=10)


@pytest.mark.parametrize("reuse_port", ["true", "false"])
def test_workers_an_address_in_use_is_a_clear_error(tiny_checkpoint, reuse_port):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with server(tiny_checkpoint, port, stderr=subprocess.PIPE, VIT_DIGITS_REUSE_PORT=reuse_port) as proc:
            assert proc.wait(timeout=60) != 0
            assert b"in use" in proc.stderr.read()


def test_workers_on_sockets_of_their_own_share_a_burst_of_connections_and_answer_every_one(tiny_checkpoint, digit_png):
    """Each worker listens on its own socket (``reuse_port``, the default): a burst of keep-alive
    connections, as a caller's pool opens them, is spread over the workers by the kernel, and none
    of them lands on a socket that nobody serves. (How far one shared socket skews the split depends
    on a load generator's timing on the same cores: ``bench/serve_load.py`` shows it, this does not.)"""
    port = free_port()
    with server(tiny_checkpoint, port, VIT_DIGITS_REUSE_PORT="true") as proc, ExitStack() as stack:
        wait_ready(lambda path: httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2))
        wait_for(lambda: len(children(proc.pid)) == 2)
        pids = children(proc.pid)
        one_connection_per_worker(port, pids, stack)  # both workers loaded and serving
        burst: list[Connection] = []
        answered: list[int] = []
        start = threading.Barrier(64)

        def client() -> None:  # connects with the others, then keeps its connection busy
            start.wait()
            connection = Connection(port)
            burst.append(stack.enter_context(_closing(connection)))
            for _ in range(5):
                answered.append(connection.request("POST", "/v1/predict", digit_png)[0])

        threads = [threading.Thread(target=client) for _ in range(64)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answered == [200] * 5 * 64, "a connection was not answered"
        fewest = min(sum(connection.worker(pids) == pid for connection in burst) for pid in pids)
        assert fewest >= 12, "a fair coin gives each worker 32 of 64, under 12 about once in a million"


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_with_a_slow_upload_exits_within_the_grace_and_finishes_requests_in_flight(
    tiny_checkpoint, digit_png, tmp_path, workers
):
    grace = 2
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    with server(tiny_checkpoint, port, workers, stderr=log, VIT_DIGITS_SHUTDOWN_GRACE_S=str(grace)) as proc:
        wait_ready(lambda path: httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2))
        wait_for(lambda: workers == 1 or len(children(proc.pid)) == workers)
        trickling = socket.create_connection(("127.0.0.1", port), timeout=30)
        trickling.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
        )
        stop_trickling = threading.Event()

        def trickle() -> None:  # one byte every 0.2 s, for as long as the server takes them
            while not stop_trickling.wait(0.2):
                try:
                    trickling.sendall(b"x")
                except OSError:
                    return

        threading.Thread(target=trickle, daemon=True).start()
        half = len(digit_png) // 2
        in_flight = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(8)]
        for s in in_flight:  # a normal request, its body half sent when SIGTERM comes
            s.sendall(
                f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {len(digit_png)}"
                f"\r\n\r\n".encode()
                + digit_png[:half]
            )
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(0.3)
        answers = []
        for s in in_flight:
            s.sendall(digit_png[half:])
            answers.append(read_until_closed(s))
            s.close()
        proc.wait(timeout=grace + 10)
        took = time.monotonic() - signalled
        stop_trickling.set()
        trickling.close()
    assert all(a.startswith(b"HTTP/1.1 200 ") and b'"digit"' in a for a in answers), answers
    assert proc.returncode in (0, -signal.SIGTERM)  # one uvicorn process re-raises SIGTERM once it is done
    assert grace - 0.5 < took < grace + 3, f"exited {took:.1f} s after SIGTERM (grace {grace} s)"
    assert (tmp_path / "server.log").read_bytes().count(b"app shut down") == workers


def read_until_closed(s: socket.socket) -> bytes:
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := s.recv(65536):
            received += chunk
    return received


def test_one_process_server_leaves_no_decoder_behind_on_sigterm(tiny_checkpoint):
    port = free_port()
    with server(tiny_checkpoint, port, workers=1) as proc:
        wait_ready(lambda path: httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2))
        wait_for(lambda: len(descendants(proc.pid)) == 3, timeout=20)  # fork server, resource tracker, decoder
        everything = descendants(proc.pid)
        proc.terminate()
        assert proc.wait(timeout=20) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once shut down
        wait_for(lambda: not any(_alive(pid) for pid in everything), timeout=10)
