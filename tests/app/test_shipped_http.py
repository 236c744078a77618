"""The shipped model over HTTP: real MNIST digits are read and called digits; pictures that are
not digits (typed letters and symbols in a typeface the model never saw, noise) are flagged."""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from model import read_meta
from tests.app.conftest import png_bytes
from tests.conftest import SHIPPED

pytestmark = pytest.mark.skipif(not SHIPPED.exists(), reason=f"no shipped checkpoint at {SHIPPED}")
PNG = {"content-type": "image/png"}


def typed(text: str) -> bytes:
    """``text`` typed in Pillow's own font (not one of the typefaces the model trained on), black on white."""
    image = Image.new("RGB", (240, 240), "white")
    ImageDraw.Draw(image).text((120, 120), text, fill="black", font=ImageFont.load_default(size=150), anchor="mm")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


NOT_DIGITS = {
    "letter A": typed("A"),
    "letter K": typed("K"),
    "letter x": typed("x"),
    "noise": png_bytes(np.random.default_rng(0).integers(0, 256, (120, 120), dtype=np.uint8)),
}
# Symbols are the held-out kind the verdict handles worst (66% flagged, docs/TRUST.md): these,
# typed in a typeface the model never saw, are not flagged by the shipped model (`#` scores 0.36
# against a threshold of 0.26). Strict: the day a model flags them, this test says so.
SYMBOLS = {"symbol &": typed("&"), "symbol #": typed("#")}


@pytest.fixture(scope="module")
def shipped_client(tiny_checkpoint):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings
    from tests.app.conftest import wait_ready

    with TestClient(create_app(Settings(checkpoints=[SHIPPED])), raise_server_exceptions=False) as client:
        wait_ready(client.get)
        yield client


def test_shipped_model_reads_200_mnist_digits_over_http_and_calls_them_digits(shipped_client, mnist_root):
    from training.data import load_split

    test = load_split(mnist_root, train=False)
    right = flagged = 0
    for i in range(200):
        r = shipped_client.post("/v1/predict", content=png_bytes(test.images[i].numpy()), headers=PNG)
        assert r.status_code == 200
        right += r.json()["digit"] == int(test.labels[i])
        flagged += not r.json()["is_digit"]
    assert right >= 196, f"{right}/200 right"
    assert flagged <= 2, f"{flagged}/200 real digits called not a digit"


@pytest.mark.parametrize(
    ("name", "picture"),
    [
        *NOT_DIGITS.items(),
        *(
            pytest.param(n, p, marks=pytest.mark.xfail(strict=True, reason="held-out symbols"))
            for n, p in SYMBOLS.items()
        ),
    ],
)
def test_shipped_model_flags_what_is_not_a_digit(shipped_client, name, picture):
    body = shipped_client.post("/v1/predict", content=picture, headers=PNG).json()
    threshold = read_meta(SHIPPED).calibration.threshold
    assert body["is_digit"] is False, f"{name}: digit score {body['digit_score']} >= threshold {threshold}"
    r = shipped_client.post("/v1/predict?reject=true", content=picture, headers=PNG)
    assert r.status_code == 422 and r.json()["error"]["code"] == "not_a_digit"


def test_shipped_model_is_calibrated():
    cal = read_meta(SHIPPED).calibration
    assert cal.threshold is not None and cal.fitted, "run python -m training trust --write on the shipped model"
    assert cal.temperature != 1.0


@pytest.mark.parametrize("staging", ["tight", "tiny", "blurred", "boxed"])
def test_shipped_model_reads_digits_as_callers_crop_them(shipped_client, mnist_root, staging):
    # tight crops (strokes touching the edges), thumbnails of 8-16 pixels sent small or enlarged,
    # out-of-focus pictures, and digits on a form (in a printed box, on ruled or squared paper): what
    # a caller's own cropping or scanning produces
    from training.data import load_split
    from training.pictures import STAGINGS, stage_digit

    test = load_split(mnist_root, train=False)
    rng = np.random.default_rng([7, STAGINGS.index(staging)])
    right = 0
    for i in range(40):
        buffer = io.BytesIO()
        stage_digit(test.images[i].numpy(), rng, staging).save(buffer, "PNG")
        r = shipped_client.post("/v1/predict", content=buffer.getvalue(), headers=PNG)
        right += r.status_code == 200 and r.json()["digit"] == int(test.labels[i])
    assert right >= 36, f"{staging}: {right}/40 right"


# digits drawn with a ruler-straight pen, as polylines in a unit box: their bars run across a tight
# crop like a form's printed lines, and must not be taken for one
RULED_DIGITS = {
    7: [[(0, 0), (1, 0), (0.35, 1)]],
    4: [[(0.7, 1), (0.7, 0), (0, 0.65), (1, 0.65)]],
    2: [[(0, 0.15), (0.3, 0), (0.8, 0), (1, 0.25), (0, 1), (1, 1)]],
    1: [[(0.2, 0.2), (0.5, 0), (0.5, 1)], [(0.15, 1), (0.85, 1)]],
    5: [[(1, 0), (0.1, 0), (0.05, 0.45), (0.7, 0.4), (1, 0.7), (0.7, 1), (0, 0.95)]],
    3: [[(0, 0), (1, 0), (0.4, 0.45), (1, 0.7), (0.6, 1), (0, 0.95)]],
}


@pytest.mark.parametrize("digit", RULED_DIGITS)
def test_shipped_model_reads_a_tight_crop_of_straight_strokes_as_drawn(shipped_client, digit):
    for height, pen in ((120, 2), (120, 5), (500, 2), (500, 5)):
        width = int(height * 0.7)
        image = Image.new("L", (width + 2 * pen, height + 2 * pen), 255)
        draw = ImageDraw.Draw(image)
        for line in RULED_DIGITS[digit]:
            draw.line([(pen + x * width, pen + y * height) for x, y in line], fill=0, width=pen)
        body = shipped_client.post("/v1/predict", content=png_bytes(np.asarray(image)), headers=PNG).json()
        assert body["digit"] == digit, f"{height} px tall, a {pen} px pen: read {body['digit']}"


def test_shipped_model_keeps_a_fives_bar_that_the_top_edge_cuts(shipped_client):
    # a 5 whose bar, drawn apart from its body, runs off the top of the picture: the top edge cuts a
    # digit's own strokes, never a neighbour's (which sit left, right, or as a comma below)
    for side in (60, 300):
        pen, margin = max(2, side // 15), max(3, side // 20)
        image = Image.new("L", (side, side), 255)
        draw = ImageDraw.Draw(image)
        bar = pen // 2 - 2  # its top two pixels off the picture
        draw.line([(0.30 * side, bar), (0.85 * side, bar)], fill=0, width=pen)
        stem = bar + pen // 2 + 6 + pen // 2  # six pixels below the bar
        draw.line([(0.30 * side, stem), (0.27 * side, 0.5 * side)], fill=0, width=pen)
        draw.arc([0.2 * side, 0.38 * side, side - margin - pen, side - margin], 200, 140, fill=0, width=pen)
        body = shipped_client.post("/v1/predict", content=png_bytes(np.asarray(image)), headers=PNG).json()
        assert body["digit"] == 5 and body["confidence"] > 0.9, f"{side} px: {body['digit']} at {body['confidence']}"
