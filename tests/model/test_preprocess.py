import io

import numpy as np
import pytest
from PIL import Image

from model.preprocess import ImageError, _median, center_of_mass, decode_image, prepare, prepare_bytes


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def digits(mnist_root):
    from training.data import load_split

    test = load_split(mnist_root, train=False)
    return test.images[:40].numpy()


def test_preprocess_mnist_digit_pasted_small_off_centre_dark_on_white(digits):
    scores = []
    for d in digits:
        canvas = np.full((400, 300), 255, np.uint8)
        small = np.asarray(Image.fromarray(255 - d).resize((84, 84), Image.Resampling.BICUBIC))
        canvas[30:114, 190:274] = small
        p = prepare_bytes(_png(canvas))
        assert p.inverted
        scores.append(np.corrcoef(p.pixels.ravel(), d.ravel() / 255.0)[0, 1])
    assert np.mean(scores) > 0.85, f"mean correlation with the original digits {np.mean(scores):.3f}"


def test_preprocess_mnist_digit_passes_through_unchanged(digits):
    for d in digits[:10]:
        p = prepare(Image.fromarray(d))
        assert not p.inverted
        assert np.corrcoef(p.pixels.ravel(), d.ravel() / 255.0)[0, 1] > 0.97


def test_preprocess_geometry_centre_of_mass_and_box():
    canvas = np.full((300, 500), 240, np.uint8)
    canvas[20:200, 400:430] = 10  # a tall dark bar near the right edge: a "1"
    p = prepare_bytes(_png(canvas))
    cy, cx = center_of_mass(p.pixels)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    rows = np.flatnonzero((p.pixels > 0.05).any(1))
    cols = np.flatnonzero((p.pixels > 0.05).any(0))
    assert rows[-1] - rows[0] + 1 <= 20 and cols[-1] - cols[0] + 1 <= 20
    assert rows[-1] - rows[0] + 1 >= 19  # the long side is fitted to 20


def test_preprocess_light_ink_on_dark_is_not_inverted():
    canvas = np.zeros((100, 100), np.uint8)
    canvas[30:70, 45:55] = 255
    assert not prepare_bytes(_png(canvas)).inverted


def test_preprocess_transparent_canvas_stroke_is_ink_whatever_its_colour():
    rgba = np.zeros((120, 120, 4), np.uint8)  # fully transparent black canvas
    rgba[20:100, 55:65] = (0, 0, 0, 255)  # a black stroke: invisible if alpha were dropped
    p = prepare_bytes(_png(rgba, "RGBA"))
    assert p.pixels.max() > 0.9
    cy, cx = center_of_mass(p.pixels)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def test_preprocess_exif_orientation_is_applied():
    canvas = np.full((60, 200), 255, np.uint8)
    canvas[25:35, 20:180] = 0  # a horizontal bar, stored sideways
    img = Image.fromarray(canvas)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    p = prepare_bytes(buf.getvalue())
    rows = np.flatnonzero((p.pixels > 0.3).any(1))
    cols = np.flatnonzero((p.pixels > 0.3).any(0))
    assert rows[-1] - rows[0] > cols[-1] - cols[0]  # upright: now a vertical bar


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_image"),
        (b"hello, not an image", "unsupported_format"),
        (_png(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8))[:600], "invalid_image"),
        (_png(np.full((40, 40), 200, np.uint8)), "no_digit"),
    ],
)
def test_preprocess_bad_inputs_raise_coded_errors(data, code):
    with pytest.raises(ImageError) as info:
        prepare_bytes(data)
    assert info.value.code == code


def test_preprocess_pixel_cap_is_checked_before_decoding():
    big = _png(np.zeros((3000, 3000), np.uint8))
    with pytest.raises(ImageError, match="exceeds the limit") as info:
        decode_image(big, max_pixels=1_000_000)
    assert info.value.code == "image_too_large"


def test_preprocess_rgb_checkpoint_gets_three_channels():
    canvas = np.zeros((28, 28), np.uint8)
    canvas[5:23, 12:16] = 255
    p = prepare(Image.fromarray(canvas), mean=(0.1,) * 3, std=(0.3,) * 3)
    assert p.tensor.shape == (3, 28, 28)


@pytest.mark.parametrize("size", [1, 2, 7, 112, 113])
def test_fast_median_is_numpy_median(size: int) -> None:
    values = np.random.default_rng(size).random(size).astype(np.float32)
    assert _median(values) == pytest.approx(float(np.median(values)), abs=1e-7)


def test_center_of_mass_matches_the_definition() -> None:
    a = np.random.default_rng(0).random((20, 14))
    ys, xs = np.indices(a.shape)
    assert center_of_mass(a) == pytest.approx(((ys * a).sum() / a.sum(), (xs * a).sum() / a.sum()))
