"""Slow clients against the load balancer; standard library only, so it runs in any Python image.

``flood``: open ``--connections`` connections over ``--ramp`` seconds, each sending a request
header one byte every ``--interval`` seconds, for ``--hold`` seconds in all; prints one JSON line
counting how many connected, how many the server closed at once (< 1 s) or later, and the most
that were open together.

``upload``: POST a file whose body trickles in over ``--seconds``; prints the status and timing.

    python3 slow_clients.py flood lb 8000 --connections 10000
    python3 slow_clients.py upload 127.0.0.1 8000 digit.png --seconds 6
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import time
from pathlib import Path

REQUEST_START = b"POST /v1/predict HTTP/1.1\r\nHost: vit-digits\r\nContent-Type: image/png\r\n"


class Flood:
    """Counts of a flood: connection outcomes and the number open at once."""

    def __init__(self) -> None:
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.open = 0
        self.peak_open = 0

    async def one(self, host: str, port: int, delay: float, hold_until: float, interval: float) -> None:
        """One slow connection: connect after ``delay``, then a header byte every ``interval``."""
        await asyncio.sleep(delay)
        opened = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        except (OSError, asyncio.TimeoutError) as exc:
            self.outcomes[f"connect failed: {type(exc).__name__}"] += 1
            return
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)
        outcome = "open at the end"
        try:
            writer.write(REQUEST_START)
            while time.monotonic() < hold_until:
                # whatever comes back (a 408, or end of file) means the server gave up on us
                try:
                    data = await asyncio.wait_for(reader.read(1024), interval)
                except asyncio.TimeoutError:
                    writer.write(b"X")  # one more byte of a header line that never ends
                    continue
                held = time.monotonic() - opened
                kind = "answered" if data else "closed"
                outcome = f"{kind} within 1 s" if held < 1 else f"{kind} after {min(int(held), 30)}+ s"
                break
        except OSError as exc:
            outcome = f"reset ({type(exc).__name__})"
        finally:
            self.open -= 1
            self.outcomes[outcome] += 1
            writer.close()


async def flood(args: argparse.Namespace) -> None:
    state = Flood()
    start = time.monotonic()
    hold_until = start + args.hold
    tasks = [
        state.one(args.host, args.port, i * args.ramp / args.connections, hold_until, args.interval)
        for i in range(args.connections)
    ]
    await asyncio.gather(*tasks)
    print(
        json.dumps(
            {
                "connections": args.connections,
                "peak_open": state.peak_open,
                "outcomes": dict(sorted(state.outcomes.items())),
                "seconds": round(time.monotonic() - start, 1),
            }
        ),
        flush=True,
    )


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
    asyncio.run(flood(args) if args.mode == "flood" else upload(args))


if __name__ == "__main__":
    main()
