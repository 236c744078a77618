"""POST real MNIST test digits to a running service; exit non-zero unless >= 95% are right.

python tests/docker/check_digits.py http://127.0.0.1:8000 [count]
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from training.data import load_split, prepare_root  # noqa: E402


def main(base: str, count: int) -> None:
    test = load_split(prepare_root(ROOT / "tests" / "data" / "mnist"), train=False)
    right = 0
    with httpx.Client(base_url=base, timeout=30) as client:
        for i in range(count):
            buf = io.BytesIO()
            Image.fromarray(test.images[i].numpy()).save(buf, "PNG")
            r = client.post("/v1/predict", content=buf.getvalue(), headers={"content-type": "image/png"})
            r.raise_for_status()
            right += r.json()["digit"] == int(test.labels[i])
    print(f"check_digits: {right}/{count} MNIST test digits right")
    if right < 0.95 * count:
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 50)
