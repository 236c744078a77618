"""POST real MNIST test digits to a running service; exit non-zero unless >= 95% are right and
called digits (is_digit), and unless a typed letter is called not a digit.

python tests/docker/check_digits.py http://127.0.0.1:8000 [count]
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import httpx
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from training.data import load_split, prepare_root  # noqa: E402


def main(base: str, count: int) -> None:
    test = load_split(prepare_root(ROOT / "tests" / "data" / "mnist"), train=False)
    right = digits = 0
    with httpx.Client(base_url=base, timeout=30) as client:
        for i in range(count):
            buf = io.BytesIO()
            Image.fromarray(test.images[i].numpy()).save(buf, "PNG")
            r = client.post("/v1/predict", content=buf.getvalue(), headers={"content-type": "image/png"})
            r.raise_for_status()
            right += r.json()["digit"] == int(test.labels[i])
            digits += r.json()["is_digit"]
        letter = client.post("/v1/predict?reject=true", content=_typed("K"), headers={"content-type": "image/png"})
    print(f"check_digits: {right}/{count} MNIST digits right, {digits} called digits; letter K: {letter.status_code}")
    if right < 0.95 * count or digits < 0.95 * count or letter.status_code != 422:
        sys.exit(1)


def _typed(text: str) -> bytes:
    image = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(image).text((100, 100), text, fill=0, font=ImageFont.load_default(size=120), anchor="mm")
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 50)
