"""What the decoding box costs per picture: an MNIST-size PNG decoded and preprocessed inline, in the
service's decoder process (app.decoding over app.worker_pool), in a ProcessPoolExecutor process,
and in a thread, side by side; and what the service does with it (``Decoder.prepare``: a small
plain PNG is decoded in the server's process).

For each way, ``--calls`` pictures one after the other from an event loop (uvloop, as the server
runs), alternating the ways over ``--repeat`` rounds; per way the median wall time per picture (the
latency a request sees), the event loop's own CPU time per picture (what the server's process
spends, the decoding itself excluded where it runs elsewhere) and, for the decoder process, the CPU
time of both processes together (what a saturated server pays per picture). One decoder process,
as a server worker has by default.

    .venv/bin/python bench/decode_box.py [--calls 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.decoding import Decoder, decode_task  # noqa: E402
from app.worker_pool import Limits, WorkerPool  # noqa: E402
from model.meta import Preprocessing  # noqa: E402
from model.preprocess import DEFAULT_MAX_FULL_DECODE_PIXELS, DEFAULT_MAX_PIXELS, Prepared, prepare_bytes  # noqa: E402

PRE = Preprocessing()


def digit_png() -> bytes:
    """The first MNIST test digit of the committed slice as a PNG (~300 bytes), as serve_load sends."""
    import io

    from PIL import Image

    from training.data import load_split, prepare_root

    digit = load_split(prepare_root(ROOT / "tests" / "data" / "mnist"), train=False).images[0].numpy()
    buf = io.BytesIO()
    Image.fromarray(digit).save(buf, "PNG")
    return buf.getvalue()


def inline(data: bytes) -> Prepared:
    return prepare_bytes(data, PRE.mean, PRE.std, PRE.image_size)


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time of the processes ``pids`` so far."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


async def timed(call: Callable[[], Awaitable[object]], calls: int, others: list[int]) -> tuple[float, float, float]:
    """(wall, this process's CPU, CPU of the processes ``others``) seconds per call."""
    wall, cpu, other = time.perf_counter(), time.process_time(), cpu_seconds(others)
    for _ in range(calls):
        await call()
    spent = time.perf_counter() - wall, time.process_time() - cpu, cpu_seconds(others) - other
    return spent[0] / calls, spent[1] / calls, spent[2] / calls


async def measure(calls: int, repeat: int) -> None:
    data = digit_png()
    pool = WorkerPool(decode_task, Limits(1, 200 << 20, 10**9), name="decoder")
    await pool.start()
    decoder = Decoder(pool, DEFAULT_MAX_PIXELS, DEFAULT_MAX_FULL_DECODE_PIXELS, 5.0)
    processes = ProcessPoolExecutor(1)
    threads = ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()

    async def on_the_loop() -> object:
        return inline(data)

    ways: dict[str, Callable[[], Awaitable[object]]] = {
        "inline, on the event loop": on_the_loop,
        "Decoder.prepare (the service)": lambda: decoder.prepare(data, PRE, 5.0),
        "decoder process (Decoder.prepare_in_box)": lambda: decoder.prepare_in_box(data, PRE, 5.0),
        "ProcessPoolExecutor(1)": lambda: loop.run_in_executor(processes, inline, data),
        "ThreadPoolExecutor(1)": lambda: loop.run_in_executor(threads, inline, data),
    }
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in ways}
    for round_ in range(repeat + 1):  # round 0 warms up
        order = list(ways) if round_ % 2 else list(reversed(ways))
        for name in order:
            others = pool.pids() if name.startswith("decoder") else []
            figures = await timed(ways[name], calls if round_ else 50, others)
            if round_:
                results[name].append(figures)
    await pool.close()
    processes.shutdown()
    threads.shutdown()
    base = statistics.median(w for w, _, _ in results["inline, on the event loop"])
    print(f"{len(data)}-byte MNIST PNG, {calls} calls x {repeat} rounds; median (min-max), microseconds per picture")
    print("| way | wall per picture | event loop CPU | both processes' CPU | wall - inline |")
    print("| --- | --- | --- | --- | --- |")
    for name, figures in results.items():
        walls, cpus = [w * 1e6 for w, _, _ in figures], [c * 1e6 for _, c, _ in figures]
        both = [(c + o) * 1e6 for _, c, o in figures]
        total = f"{statistics.median(both):.0f} ({min(both):.0f}-{max(both):.0f})" if name.startswith("decoder") else ""
        print(
            f"| {name} | {statistics.median(walls):.0f} ({min(walls):.0f}-{max(walls):.0f}) "
            f"| {statistics.median(cpus):.0f} ({min(cpus):.0f}-{max(cpus):.0f}) | {total} "
            f"| {statistics.median(walls) - base * 1e6:+.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    uvloop.run(measure(args.calls, args.repeat))


if __name__ == "__main__":
    main()
