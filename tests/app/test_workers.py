"""``python -m app`` with several workers: connections shared evenly, dead workers come back."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from app.workers import can_hand_over_connections
from tests.app.conftest import free_port, wait_ready
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(not can_hand_over_connections(), reason="needs SCM_RIGHTS (Unix)")


@contextmanager
def supervisor(checkpoint: Path, port: int, stderr: int = subprocess.DEVNULL) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        "VIT_DIGITS_CHECKPOINTS": str(checkpoint),
        "VIT_DIGITS_PORT": str(port),
        "VIT_DIGITS_HOST": "127.0.0.1",
        "VIT_DIGITS_WORKERS": "2",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app"], cwd=ROOT, env=dict(os.environ, **env), stdout=subprocess.DEVNULL, stderr=stderr
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=20)
        for pid in workers(proc.pid):  # never leave workers behind, whatever the test did
            os.kill(pid, signal.SIGKILL)


def workers(parent: int) -> list[int]:
    """The uvicorn worker processes of ``parent`` (not multiprocessing's resource tracker)."""
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except FileNotFoundError:
        return []
    return [int(pid) for pid in children if b"spawn_main" in _cmdline(int(pid))]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def established_connections(pid: int, port: int) -> int:
    """How many established TCP connections on local ``port`` the process ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, state, inode = int(fields[1].split(":")[1], 16), fields[3], fields[9]
        count += local_port == port and state == "01" and inode in inodes  # 01 = ESTABLISHED
    return count


def connections_land_on(base: str, port: int, pids: list[int]) -> list[int]:
    """Open one connection per worker and count where each landed (workers still loading get none)."""
    with ExitStack() as stack:
        for _ in pids:
            stack.enter_context(httpx.Client(base_url=base, timeout=10)).get("/healthz")
        return [established_connections(pid, port) for pid in pids]


def wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.2)


def test_workers_share_connections_come_back_after_a_crash_and_stop_on_sigterm(tiny_checkpoint, digit_png):
    port = free_port()
    with supervisor(tiny_checkpoint, port) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_ready(lambda path: httpx.get(base + path, timeout=2))
        wait_for(lambda: len(workers(proc.pid)) == 2)
        first, second = workers(proc.pid)
        wait_for(lambda: connections_land_on(base, port, [first, second]) == [1, 1])  # both ready: they take turns

        # keep-alive connections opened at once go to the workers in turn: an even split, every time
        for count in (4, 32):
            with ExitStack() as stack:
                clients = [stack.enter_context(httpx.Client(base_url=base, timeout=30)) for _ in range(count)]
                for client in clients:
                    answer = client.post("/v1/predict", content=digit_png, headers={"content-type": "image/png"})
                    assert answer.status_code == 200
                held = [established_connections(pid, port) for pid in (first, second)]
            assert held == [count // 2, count // 2], f"connections per worker: {held}"

        os.kill(first, signal.SIGKILL)
        wait_for(lambda: len(workers(proc.pid)) == 2 and first not in workers(proc.pid))
        assert second in workers(proc.pid)
        wait_for(lambda: all(httpx.get(base + "/readyz", timeout=2).status_code == 200 for _ in range(8)))

        replacement = [pid for pid in workers(proc.pid) if pid != second]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0
        assert not any(Path(f"/proc/{pid}").exists() and _cmdline(pid) for pid in [second, *replacement])


def test_an_address_in_use_is_a_clear_error(tiny_checkpoint):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with supervisor(tiny_checkpoint, taken.getsockname()[1], stderr=subprocess.PIPE) as proc:
            assert proc.wait(timeout=30) == 1
            assert b"already in use" in proc.stderr.read()


def test_workers_do_not_outlive_a_killed_supervisor(tiny_checkpoint):
    port = free_port()
    with supervisor(tiny_checkpoint, port) as proc:
        wait_ready(lambda path: httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2))
        children = workers(proc.pid)
        assert len(children) == 2
        proc.kill()  # SIGKILL: no chance to stop its workers itself
        proc.wait(timeout=10)
        wait_for(lambda: not any(_cmdline(pid) for pid in children), timeout=40)


def test_workers_apply_the_header_limit(tiny_checkpoint):
    from tests.app.test_server_limits import send_endless_header

    port = free_port()
    with supervisor(tiny_checkpoint, port) as proc:
        wait_ready(lambda path: httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2))
        assert send_endless_header(port, megabytes=2).startswith(b"HTTP/1.1 431 ")
        assert proc.poll() is None
