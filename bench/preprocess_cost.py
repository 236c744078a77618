"""CPU time of the service's preprocessing per upload, beside another checkout's, side by side.

For pictures as users send them (an MNIST-size PNG, a drawing on a big canvas, the same with a fine
pen, a photographed page under uneven light, as JPEG, a tight crop of a thick soft pen), times
``model.preprocess.prepare_bytes`` of this checkout and of ``--baseline DIR`` (e.g. ``git worktree
add /tmp/base <rev>``), alternating the two, and prints per picture the median time of each (with
the range over ``--repeat`` rounds) and the ratio. One core, the calling thread, as one request is
preprocessed in the service.

    .venv/bin/python bench/preprocess_cost.py --baseline /tmp/base
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load_preprocess(checkout: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, checkout / "model" / "preprocess.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 80} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def uploads(digit: np.ndarray) -> dict[str, bytes]:
    """The pictures, drawn from one MNIST test digit (uint8 28x28, light on dark)."""
    glyph = Image.fromarray(digit).resize((360, 360), Image.Resampling.BICUBIC)
    canvas = 255 - np.pad(np.asarray(glyph), 120)  # 600x600, dark ink on white
    fine = 255 - np.pad(np.asarray(glyph.filter(ImageFilter.MinFilter(13))), 120)
    fall_off = 1.0 - 0.35 * np.add.outer(np.linspace(0, 1, 600), np.linspace(0, 1, 600)) / 2
    photo = Image.fromarray((canvas * 0.9 * fall_off).astype(np.uint8)).convert("RGB")
    soft = glyph.filter(ImageFilter.MaxFilter(17)).filter(ImageFilter.GaussianBlur(12))
    rows, cols = np.flatnonzero(np.asarray(soft).max(axis=1) > 40), np.flatnonzero(np.asarray(soft).max(axis=0) > 40)
    tight = 255 - np.asarray(soft)[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # strokes touch the edges
    return {
        "MNIST digit, 28x28 PNG": encode(Image.fromarray(digit)),
        "canvas drawing, 600x600 PNG": encode(Image.fromarray(canvas.astype(np.uint8))),
        "fine pen, 600x600 PNG": encode(Image.fromarray(fine.astype(np.uint8))),
        "photographed page, 600x600 JPEG": encode(photo, "JPEG"),
        "tight crop, thick soft pen, PNG": encode(Image.fromarray(tight.astype(np.uint8))),
    }


def per_call(fn: Callable[[], object], seconds: float) -> float:
    """Seconds per call of ``fn``, over about ``seconds`` of calls."""
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        fn()
        calls += 1
    return elapsed / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout of this repository")
    parser.add_argument("--repeat", type=int, default=5, help="rounds, each timing both checkouts")
    parser.add_argument("--seconds", type=float, default=0.5, help="time per picture, checkout and round")
    args = parser.parse_args()
    from training.data import load_split, prepare_root

    digit = (
        load_split(prepare_root(ROOT / "tests" / "data" / "mnist"), train=False).images[0].numpy()
    )  # the slice in git
    checkouts = {"this": load_preprocess(ROOT, "pre_this"), "baseline": load_preprocess(args.baseline, "pre_base")}
    print(f"baseline: {args.baseline}; median (min-max) of {args.repeat} rounds, ms per picture")
    print("| picture | this checkout | baseline | ratio |\n| --- | --- | --- | --- |")
    for name, data in uploads(digit).items():
        times: dict[str, list[float]] = {key: [] for key in checkouts}
        for round_ in range(args.repeat + 1):  # round 0 warms up
            order = list(checkouts) if round_ % 2 else list(reversed(checkouts))
            for key in order:
                t = per_call(lambda: checkouts[key].prepare_bytes(data), args.seconds)  # noqa: B023
                if round_:
                    times[key].append(t * 1e3)
        cells = [f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})" for v in times.values()]
        ratio = statistics.median(times["this"]) / statistics.median(times["baseline"])
        print(f"| {name} | {cells[0]} | {cells[1]} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
