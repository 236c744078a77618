"""Pictures as callers crop them, over HTTP: a tight crop's thick, soft strokes arrive as strokes."""

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

PNG = {"content-type": "image/png"}


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _thick_soft_glyph(digit: np.ndarray, height: int = 120) -> np.ndarray:
    """The digit cropped to its ink, ``height`` pixels tall, drawn with a pen 1.6 times MNIST's and
    blurred by 1.2 pixels at 28-pixel scale (a felt pen, a soft scan): light on dark, uint8."""
    rows, cols = np.flatnonzero((digit > 40).any(axis=1)), np.flatnonzero((digit > 40).any(axis=0))
    crop = Image.fromarray(digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    width = max(2, round(height * crop.size[0] / crop.size[1]))
    glyph = crop.resize((width, height), Image.Resampling.BICUBIC).filter(ImageFilter.MaxFilter(9))
    return np.asarray(glyph.filter(ImageFilter.GaussianBlur(1.2 * height / 28)))


def _input_mass(client, picture: bytes) -> float:
    r = client.post("/v1/attention", content=picture, headers=PNG)
    assert r.status_code == 200, r.text
    return float(np.sum(r.json()["input"]))


@pytest.fixture(scope="module")
def test_digits(mnist_root) -> np.ndarray:
    from training.data import load_split

    return load_split(mnist_root, train=False).images[:8].numpy()


def test_tight_crop_of_a_thick_soft_digit_arrives_filled_not_as_an_outline(client, test_digits):
    # The strokes of a tight crop reach its border, so the border is not even; that once read as a
    # page under uneven light, whose paper estimate kept strokes wider than a seventh of the picture
    # as paper and subtracted them: only each stroke's outline arrived (a third to a half of the ink).
    for digit in test_digits:
        glyph = _thick_soft_glyph(digit)
        tight = _input_mass(client, _png(255 - glyph))
        on_a_page = _input_mass(client, _png(255 - np.pad(glyph, 60)))
        assert 0.75 <= tight / on_a_page <= 1.25, f"ink of the tight crop: {tight / on_a_page:.2f} of the page's"


def _input(client, picture: bytes) -> np.ndarray:
    r = client.post("/v1/attention", content=picture, headers=PNG)
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["input"], dtype=np.float32).ravel()


def _on_paper(digit: np.ndarray, pad: int) -> np.ndarray:
    """The digit 120 pixels tall, black on white paper with ``pad`` pixels around it."""
    rows, cols = np.flatnonzero((digit > 40).any(axis=1)), np.flatnonzero((digit > 40).any(axis=0))
    crop = Image.fromarray(digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    glyph = np.asarray(crop.resize((max(2, round(120 * crop.size[0] / crop.size[1])), 120), Image.Resampling.BICUBIC))
    return 255 - np.pad(glyph, pad)


@pytest.mark.parametrize("form", ["box at the edge", "box inside", "ruled", "squared"])
def test_a_digit_on_a_form_arrives_without_the_forms_lines(client, test_digits, form):
    # A crop out of a form: the printed box's lines at the picture's edge (they once made the border
    # dark, and the whole paper was read as ink) or touching the digit, or ruled and squared paper's
    # lines crossing it. The model is sent the digit alone.
    for digit in test_digits:
        alone = _on_paper(digit, 12)
        lined = alone.copy()
        h, w = lined.shape
        grey = 90
        if form.startswith("box"):
            inset = 0 if form == "box at the edge" else 6
            for t in range(inset, inset + 3):
                lined[t, inset : w - inset] = lined[h - 1 - t, inset : w - inset] = grey
                lined[inset : h - inset, t] = lined[inset : h - inset, w - 1 - t] = grey
        else:
            for y in range(20, h, 45):
                lined[y : y + 3] = np.minimum(lined[y : y + 3], grey)
            if form == "squared":
                for x in range(20, w, 45):
                    lined[:, x : x + 3] = np.minimum(lined[:, x : x + 3], grey)
        clean, seen = _input(client, _png(alone)), _input(client, _png(lined))
        assert np.corrcoef(clean, _input(client, _png(digit)))[0, 1] > 0.9, "the digit's own bars were taken for lines"
        assert np.corrcoef(clean, seen)[0, 1] > 0.9, f"{form}: the input differs from the digit alone"


@pytest.mark.parametrize("neighbour", ["sliver of the next digit", "comma"])
def test_a_crop_out_of_a_number_arrives_without_its_neighbour(client, test_digits, neighbour):
    # A digit cut out of a number keeps, at the crop's edge, part of the next digit or a comma: a
    # piece the picture's edge cuts through while the digit stands clear of it is left out.
    for digit in test_digits:
        alone = _on_paper(digit, 16)
        cropped = alone.copy()
        h, w = cropped.shape
        if neighbour == "comma":
            cropped[h - 14 :, w - 8 :] = 0
        else:
            cropped[20 : h - 20, w - 6 :] = 0  # the upright of a 1 or a 4 next door, cut by the crop
        clean, seen = _input(client, _png(alone)), _input(client, _png(cropped))
        assert np.corrcoef(clean, seen)[0, 1] > 0.95, f"{neighbour}: the input differs from the digit alone"
