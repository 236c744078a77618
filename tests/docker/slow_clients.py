"""Slow clients against the load balancer; standard library only, so it runs in any Python image.

``flood``: open ``--connections`` connections over ``--ramp`` seconds, each sending a request
header one byte every ``--interval`` seconds, for ``--hold`` seconds in all; prints one JSON line
counting how each ended (refused, closed by the server at once or after some seconds, with what
answer, or still open), and the most that were open together.

``upload``: POST a file whose body trickles in over ``--seconds``; prints the status and timing.

    python3 slow_clients.py flood lb 8000 --connections 10000
    python3 slow_clients.py upload 127.0.0.1 8000 digit.png --seconds 6
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import errno
import json
import selectors
import socket
import time
from pathlib import Path

REQUEST_START = b"POST /v1/predict HTTP/1.1\r\nHost: vit-digits\r\nContent-Type: image/png\r\n"


def flood(args: argparse.Namespace) -> None:
    """The flood, with non-blocking sockets and one selector: with asyncio's streams, four clients
    of 10,000 connections each were short of CPU here and read the server's answers 15-50 s late."""
    address = socket.getaddrinfo(args.host, args.port, socket.AF_INET, socket.SOCK_STREAM)[0][4]
    selector = selectors.DefaultSelector()
    outcomes: collections.Counter[str] = collections.Counter()
    start = time.monotonic()
    opened = open_now = peak_open = 0
    next_sweep = start

    def finish(sock: socket.socket, outcome: str) -> None:
        selector.unregister(sock)
        sock.close()
        outcomes[outcome] += 1

    while (now := time.monotonic()) < start + args.hold:
        while opened < min(args.connections, int((now - start) / args.ramp * args.connections) + 1):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex(address)  # EINPROGRESS: the selector says when it is done
            selector.register(sock, selectors.EVENT_WRITE, Slow(now))
            opened += 1
        for key, _ in selector.select(timeout=0.05):
            sock, slow = key.fileobj, key.data
            assert isinstance(sock, socket.socket) and isinstance(slow, Slow)
            if not slow.connected:
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    finish(sock, f"connect failed ({errno.errorcode.get(error, error)})")
                    continue
                slow.connected, slow.since, slow.next_byte = True, now, now + args.interval
                selector.modify(sock, selectors.EVENT_READ, slow)
                open_now += 1
                peak_open = max(peak_open, open_now)
                _send(sock, REQUEST_START)
                continue
            try:
                data = sock.recv(1024)
            except OSError as exc:
                data, what = b"", f"reset ({type(exc).__name__})"
            else:
                what = data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "closed"
            open_now -= 1
            held = now - slow.since
            finish(sock, f"{what} within 1 s" if held < 1 else f"{what} after {int(held)} s")
        if now >= next_sweep:  # a byte for each connection whose turn it is; give up slow connects
            next_sweep = now + 0.5
            for key in list(selector.get_map().values()):
                sock, slow = key.fileobj, key.data
                if slow.connected and now >= slow.next_byte:
                    slow.next_byte = now + args.interval
                    _send(sock, b"X")  # one more byte of a header line that never ends
                elif not slow.connected and now - slow.since > 10:
                    finish(sock, "connect timed out (10 s)")
    for key in list(selector.get_map().values()):
        finish(key.fileobj, "open at the end" if key.data.connected else "connecting at the end")
    result = {"connections": args.connections, "peak_open": peak_open, "outcomes": dict(sorted(outcomes.items()))}
    print(json.dumps(result | {"seconds": round(time.monotonic() - start, 1)}), flush=True)


class Slow:
    """One flood connection: connected yet, since when, when its next byte is due."""

    def __init__(self, now: float) -> None:
        self.connected = False
        self.since = now
        self.next_byte = now


def _send(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the server closed it: the selector reports it readable, counted there
        sock.send(data)


async def upload(args: argparse.Namespace) -> None:
    body = Path(args.file).read_bytes()
    start = time.monotonic()
    reader, writer = await asyncio.open_connection(args.host, args.port)
    writer.write(REQUEST_START + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
    pieces = max(1, int(args.seconds / 0.2))
    step = -(-len(body) // pieces)
    for i in range(0, len(body), step):
        writer.write(body[i : i + step])
        await writer.drain()
        await asyncio.sleep(args.seconds / pieces)
    sent = time.monotonic() - start
    response = await reader.read()
    status = response.split(b" ", 2)[1].decode() if response.startswith(b"HTTP/") else "none"
    writer.close()
    print(
        json.dumps(
            {
                "status": status,
                "upload_s": round(sent, 1),
                "total_s": round(time.monotonic() - start, 1),
                "body": response.partition(b"\r\n\r\n")[2].decode(errors="replace")[:200],
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("flood")
    f.add_argument("host")
    f.add_argument("port", type=int)
    f.add_argument("--connections", type=int, default=10_000)
    f.add_argument("--ramp", type=float, default=10, help="seconds over which the connections open")
    f.add_argument("--hold", type=float, default=30, help="seconds from the start until the flood stops")
    f.add_argument("--interval", type=float, default=3, help="seconds between two bytes of a connection")
    u = sub.add_parser("upload")
    u.add_argument("host")
    u.add_argument("port", type=int)
    u.add_argument("file")
    u.add_argument("--seconds", type=float, default=6, help="how long the body takes to arrive")
    args = parser.parse_args()
    if args.mode == "flood":
        flood(args)
    else:
        asyncio.run(upload(args))


if __name__ == "__main__":
    main()
