"""What one serving process costs: time from process start to /readyz 200, and its memory (RSS)
after warm-up, serving the ONNX export (no torch) against serving the PyTorch checkpoint, side by
side in one run.

    python bench/lean_serving.py                       # both, on this machine (needs torch for "torch")
    python bench/lean_serving.py --modes export        # e.g. inside the runtime image (no torch there)

Standard library and Pillow only, so that it runs inside the runtime image too (with tests/ mounted
next to bench/, for tests/servers.py). Each mode starts a fresh ``python -m app`` (one worker)
``--runs`` times; the start time is the median, RSS is read from /proc after ``--requests``
predictions and attention maps.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import free_port, start_app, wait_ready  # noqa: E402


def digit_png() -> bytes:
    """A hand-drawn-looking 7: dark ink on white paper."""
    image = Image.new("L", (120, 160), 255)
    ImageDraw.Draw(image).line([(20, 25), (100, 25), (50, 140)], fill=0, width=14)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def post(url: str, body: bytes) -> dict[str, object]:
    request = urllib.request.Request(url, data=body, headers={"content-type": "image/png"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read()) if r.headers.get("content-type", "").startswith("application/json") else {}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@dataclass(frozen=True)
class Start:
    """One start of the server: seconds to ready, RSS after warm-up, and what served."""

    ready_s: float
    rss_mb: float
    torch_loaded: bool
    served_from: str
    runtime: str


def measure(checkpoints: Path, requests: int, env: dict[str, str], app_dir: Path) -> Start:
    """One start of ``python -m app``: seconds to ready, RSS after warm-up, torch loaded or not."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    proc = start_app(checkpoints, port, root=app_dir, stdout=None, stderr=None, VIT_DIGITS_LOG_LEVEL="warning", **env)
    try:
        wait_ready(base, proc, timeout=120, interval=0.01)
        ready_s = time.perf_counter() - started
        png = digit_png()
        for i in range(requests):
            post(base + ("/v1/attention" if i % 4 == 0 else "/v1/predict"), png)
        with urllib.request.urlopen(base + "/v1/models", timeout=5) as r:
            model = json.loads(r.read())["models"][0]
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        return Start(ready_s, rss_mb(proc.pid), "libtorch" in maps, model["served_from"], model["runtime"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", type=Path, default=ROOT / "checkpoints")
    p.add_argument("--model", default="vit-digits", help="the model id (file stem) to serve")
    p.add_argument("--app-dir", type=Path, default=ROOT, help="where the app/ package is (/srv in the image)")
    p.add_argument("--modes", nargs="+", choices=["export", "torch"], default=["export", "torch"])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--json", type=Path, help="also write the medians per mode to this JSON file")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        for mode, suffixes in (("export", (".onnx", ".safetensors")), ("torch", (".safetensors",))):
            folder = Path(tmp) / mode
            folder.mkdir()
            for suffix in suffixes:
                source = args.checkpoints / f"{args.model}{suffix}"
                if source.exists():
                    shutil.copyfile(source, folder / source.name)
            folders[mode] = folder
        results: dict[str, list[Start]] = {m: [] for m in args.modes}
        for _ in range(args.runs):  # interleaved, so that drift in the machine's speed hits both alike
            for mode in args.modes:
                results[mode].append(measure(folders[mode], args.requests, {"VIT_DIGITS_DEVICE": "cpu"}, args.app_dir))
    summary: dict[str, dict[str, Any]] = {
        mode: {
            "ready_s": statistics.median(r.ready_s for r in runs),
            "ready_range": (min(r.ready_s for r in runs), max(r.ready_s for r in runs)),
            "rss_mb": statistics.median(r.rss_mb for r in runs),
            "torch_loaded": any(r.torch_loaded for r in runs),
            "served_from": runs[0].served_from,
            "runtime": runs[0].runtime,
        }
        for mode, runs in results.items()
    }
    print(f"{'mode':<8} {'served from':<24} {'runtime':<12} {'start->ready s (median, min-max)':<34} "
          f"{'RSS MB (median)':<16} torch loaded")  # fmt: skip
    for mode, m in summary.items():
        low, high = m["ready_range"]
        print(
            f"{mode:<8} {m['served_from']:<24} {m['runtime']:<12} "
            f"{m['ready_s']:.2f} ({low:.2f}-{high:.2f}){'':<19} {m['rss_mb']:<16.0f} {m['torch_loaded']}"
        )
    if args.json:
        args.json.write_text(json.dumps(summary))
    if len(summary) == 2:
        e, t = summary["export"], summary["torch"]
        print(
            f"export vs torch: {t['ready_s'] / e['ready_s']:.1f}x faster to ready, "
            f"{t['rss_mb'] / e['rss_mb']:.1f}x less memory"
        )


if __name__ == "__main__":
    main()
