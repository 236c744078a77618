import io
import itertools

import numpy as np
import pytest
from PIL import Image, ImageDraw

from model.preprocess import (
    WORKING_SIDE,
    ImageError,
    _median,
    center_of_mass,
    decode_image,
    load_image,
    open_image,
    prepare,
    prepare_bytes,
)


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, "PNG")
    return buf.getvalue()


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


def test_preprocess_photographed_page_under_uneven_light(digits):
    # a phone photo of a page: the light falls off by 35% from one corner to the other, so the far
    # side of the paper is darker than the faint parts of the strokes; one paper level for the
    # whole picture took that side in as ink (the digit arrived small in a corner of the crop:
    # correlation ~0.25 with the evenly lit page), where the paper's level is now found per pixel
    fall_off = 1.0 - 0.35 * np.add.outer(np.linspace(0, 1, 360), np.linspace(0, 1, 300)) / 2
    scores = []
    for d in digits[:10]:
        ink = np.zeros((360, 300), np.float32)
        ink[100:240, 90:230] = np.asarray(Image.fromarray(d).resize((140, 140), Image.Resampling.BICUBIC)) / 255.0
        page = (1.0 - 0.85 * ink) * 240
        photo, even = (np.clip(p, 0, 255).astype(np.uint8) for p in (page * fall_off, page))
        got, want = prepare_bytes(_png(photo)).pixels, prepare_bytes(_png(even)).pixels
        scores.append(np.corrcoef(got.ravel(), want.ravel())[0, 1])
    assert np.mean(scores) > 0.95, f"mean correlation with the evenly lit page {np.mean(scores):.3f}"


def test_preprocess_fine_pen_on_a_big_canvas_gets_mnist_like_strokes(digits):
    # the same digits drawn 300 pixels tall with a pen a third as wide (a 2-pixel brush on a web
    # canvas): fitted into 20x20 as they were, the strokes arrived as faint hairlines holding half
    # the ink of the normal pen's (mean ratio 0.53 before they were widened)
    from PIL import ImageFilter

    ratios, scores = [], []
    for d in digits[:10]:
        glyph = Image.fromarray(d).resize((300, 300), Image.Resampling.BICUBIC)
        fine = glyph.filter(ImageFilter.MinFilter(13))
        got, want = (prepare_bytes(_png(255 - np.pad(np.asarray(g), 100))).pixels for g in (fine, glyph))
        ratios.append(got.sum() / want.sum())
        scores.append(np.corrcoef(got.ravel(), want.ravel())[0, 1])
    assert np.mean(ratios) > 0.8 and np.mean(scores) > 0.9, (np.mean(ratios), np.mean(scores))


def test_preprocess_mnist_digit_passes_through_unchanged(digits):
    for d in digits[:10]:
        p = prepare(Image.fromarray(d))
        assert not p.inverted
        assert np.corrcoef(p.pixels.ravel(), d.ravel() / 255.0)[0, 1] > 0.97


def test_preprocess_a_digit_at_mnist_scale_keeps_its_strokes():
    # a 7 drawn one pixel wide at MNIST's own size: widened at this scale (a one-pixel dilation) its
    # strokes would come out three pixels wide
    from PIL import ImageDraw

    image = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(image).line([(8, 5), (19, 5), (12, 23)], fill=255, width=1)
    p = prepare(image)
    assert p.pixels.sum() < 1.5 * np.asarray(image).sum() / 255.0  # 1.3x: the fit into 20x20; 3.2x widened


def _page(side: int = 500) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    page = Image.new("L", (side, side), 235)
    return page, ImageDraw.Draw(page)


SEVEN = [(150, 150), (330, 150), (210, 350)]


@pytest.mark.parametrize("size", [28, 56])
def test_preprocess_dust_on_a_blank_page_is_no_digit_but_a_hairline_one_is_read(size):
    # a few specks of dust across a 500-pixel page: widened like a fine pen's strokes they arrived
    # as blobs (read as a 5 or a 7 with full confidence); they are not strokes, and alone they hold
    # a fraction of the ink of MNIST's faintest digit. A "1" drawn with a one-pixel pen on the
    # same page is a stroke: it is widened and read, at any model input size.
    rng = np.random.default_rng(0)
    for _ in range(5):
        page, draw = _page()
        for cx, cy in rng.uniform(0, 500, size=(int(rng.integers(2, 8)), 2)):
            r = float(rng.uniform(1, 5))
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=40)
        with pytest.raises(ImageError) as info:
            prepare(page, size=size)
        assert info.value.code == "no_digit"
    page, draw = _page()
    draw.line([(250, 100), (240, 400)], fill=40, width=1)
    assert prepare(page, size=size).pixels.sum() > 20 * (size / 28) ** 2  # MNIST's faintest digit: 20


@pytest.mark.parametrize("distance", [40, 100, 150])
def test_preprocess_a_speck_far_from_a_digit_is_left_out_of_the_crop(distance):
    # a 7 drawn 200 pixels tall on a 500-pixel page and a speck of dust beside it: the crop took the
    # speck in, and the 7 arrived squeezed into a corner of the box
    page, draw = _page()
    draw.line(SEVEN, fill=30, width=12)
    alone = prepare(page).pixels
    draw.ellipse([330 + distance - 4, 462, 330 + distance + 4, 470], fill=30)  # below and to the right
    with_speck = prepare(page).pixels
    assert np.corrcoef(alone.ravel(), with_speck.ravel())[0, 1] > 0.99


@pytest.mark.parametrize(("dot", "step", "alike"), [(0.5, 6, 0.95), (1, 8, 0.95), (1.5, 15, 0.75), (2, 25, 0.5)])
def test_preprocess_a_dotted_digit_on_a_big_canvas_is_read_like_a_solid_one(dot, step, alike):
    # each dot is a speck, but together they are a stroke: not refused as dust, and widened like a
    # stroke (the sparser the dots, the less the fitted 7 looks like a solid one: 0.61 at 25 px)
    solid_page, solid = _page()
    solid.line(SEVEN, fill=30, width=3)
    page, draw = _page()
    for (ax, ay), (bx, by) in itertools.pairwise(SEVEN):
        n = max(1, int(np.hypot(bx - ax, by - ay) // step))
        for k in range(n + 1):
            cx, cy = ax + (bx - ax) * k / n, ay + (by - ay) * k / n
            draw.ellipse([cx - dot, cy - dot, cx + dot, cy + dot], fill=30)
    got, want = prepare(page).pixels, prepare(solid_page).pixels
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > alike


@pytest.mark.parametrize(("dash", "gap"), [(40, 45), (50, 50), (16, 18), (40, 80)])
def test_preprocess_a_dashed_digit_keeps_every_dash(dash, gap):
    # dashes as long as the gaps between them: each dash is a piece of its own, one of them may
    # hold more ink than the rest, and none is a speck
    page, draw = _page()
    seven = [(100, 100), (370, 100), (190, 400)]  # 300 pixels tall, a 3-pixel pen
    for (ax, ay), (bx, by) in itertools.pairwise(seven):
        length = float(np.hypot(bx - ax, by - ay))
        for start in np.arange(0, length, dash + gap):
            end = min(start + dash, length)
            draw.line(
                [(ax + (bx - ax) * t / length, ay + (by - ay) * t / length) for t in (start, end)], fill=30, width=3
            )
    got = prepare(page).pixels
    ink = np.asarray(page) < 128
    rows, cols = (np.flatnonzero(got.max(axis=a) > 0.2) for a in (1, 0))
    # fitted with the page's own proportions: a dash left out would change them
    page_rows, page_cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    assert np.ptp(rows) / np.ptp(cols) == pytest.approx(np.ptp(page_rows) / np.ptp(page_cols), rel=0.1)


def test_preprocess_a_five_keeps_its_floating_top_bar():
    # the bar holds a tenth of the ink and floats 50 pixels above the body: small, but near the
    # digit, so not a stray mark like a speck of dust
    body = [(190, 250), (190, 300), (290, 300), (310, 360), (290, 420), (200, 440)]
    with_bar, draw = _page()
    draw.line(body, fill=30, width=5)
    draw.line([(195, 200), (235, 200)], fill=30, width=5)
    body_only, draw = _page()
    draw.line(body, fill=30, width=5)
    got, without = prepare(with_bar).pixels, prepare(body_only).pixels
    width = [np.ptp(np.flatnonzero(p.max(axis=0) > 0.2)) for p in (got, without)]
    assert width[0] < width[1] - 1, width  # fitted 20 tall, the 5 with its bar is the narrower


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


def _with_ihdr(png: bytes, colour_type: int, depth: int) -> bytes:
    """``png`` with its header's colour type and bit depth replaced (and its CRC made right)."""
    import struct
    import zlib

    header = bytearray(png[12:29])  # "IHDR" and its 13 bytes
    header[12], header[13] = depth, colour_type
    return png[:12] + bytes(header) + struct.pack(">I", zlib.crc32(bytes(header))) + png[33:]


@pytest.mark.parametrize(("colour_type", "depth"), [(1, 8), (2, 1), (255, 8)])
def test_an_accepted_format_with_a_header_no_decoder_takes_is_invalid_not_unsupported(colour_type, depth):
    data = _with_ihdr(_png(np.full((28, 28), 200, np.uint8)), colour_type, depth)
    with pytest.raises(ImageError, match="a PNG whose header is invalid") as info:
        prepare_bytes(data)
    assert info.value.code == "invalid_image"  # 400, not 415: the caller sent a PNG, a broken one


def test_preprocess_pixel_cap_is_checked_before_decoding():
    big = _png(np.zeros((3000, 3000), np.uint8))
    with pytest.raises(ImageError, match="exceeds the limit") as info:
        decode_image(big, max_pixels=1_000_000)
    assert info.value.code == "image_too_large"


def test_preprocess_rgb_checkpoint_gets_three_channels():
    canvas = np.zeros((28, 28), np.uint8)
    canvas[5:23, 12:16] = 255
    p = prepare(Image.fromarray(canvas), mean=(0.1,) * 3, std=(0.3,) * 3)
    assert p.model_input.shape == (3, 28, 28)


@pytest.mark.parametrize("size", [1, 2, 7, 112, 113])
def test_fast_median_is_numpy_median(size: int) -> None:
    values = np.random.default_rng(size).random(size).astype(np.float32)
    assert _median(values) == pytest.approx(float(np.median(values)), abs=1e-7)


def test_center_of_mass_matches_the_definition() -> None:
    a = np.random.default_rng(0).random((20, 14))
    ys, xs = np.indices(a.shape)
    assert center_of_mass(a) == pytest.approx(((ys * a).sum() / a.sum(), (xs * a).sum() / a.sum()))


def _bar_picture(width: int, height: int) -> np.ndarray:
    """Dark ink on light paper: a slanted thick bar (a "1") off centre."""
    canvas = np.full((height, width), 235, np.uint8)
    for row in range(height // 5, 4 * height // 5):
        left = width // 3 + (row - height // 5) // 6
        canvas[row, left : left + width // 20] = 20
    return canvas


def _full_size(data: bytes) -> np.ndarray:
    return prepare(load_image(open_image(data, 10**9, 10**9), working_side=None)).pixels


def _same_digit(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two 28x28 digits, allowing a one-pixel shift: centring rounds the centre of
    mass to whole pixels, and one at x.5 can go either way for a tiny change in the picture."""
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return max(float(np.corrcoef(np.roll(a, s, axis=(0, 1)).ravel(), b.ravel())[0, 1]) for s in shifts)


@pytest.mark.parametrize(("size", "fmt"), [((3000, 2000), "PNG"), ((4000, 3000), "JPEG"), ((2100, 300), "PNG")])
def test_preprocess_big_picture_is_reduced_early_with_the_same_result(size, fmt):
    canvas = _bar_picture(*size)
    buf = io.BytesIO()
    Image.fromarray(canvas).convert("RGB").save(buf, fmt)
    loaded = load_image(open_image(buf.getvalue()))
    assert WORKING_SIDE <= max(loaded.size) < 2 * WORKING_SIDE and loaded.mode == "L"
    reduced = prepare(loaded).pixels
    assert _same_digit(reduced, _full_size(buf.getvalue())) > 0.97


def test_preprocess_normal_size_picture_is_not_reduced():
    data = _png(_bar_picture(2 * WORKING_SIDE - 1, 700))
    loaded = load_image(open_image(data))
    assert loaded.size == (2 * WORKING_SIDE - 1, 700)
    np.testing.assert_array_equal(prepare(loaded).pixels, _full_size(data))


def test_preprocess_big_transparent_drawing_and_big_palette_picture():
    rgba = np.zeros((1600, 1600, 4), np.uint8)
    rgba[300:1300, 700:820] = (0, 0, 0, 255)  # a black stroke on a transparent canvas
    p = prepare_bytes(_png(rgba, "RGBA"))
    assert not p.inverted and p.pixels.max() > 0.9
    cy, cx = center_of_mass(p.pixels)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    buf = io.BytesIO()
    Image.fromarray(_bar_picture(1600, 1200)).convert("P").save(buf, "PNG")
    assert _same_digit(prepare_bytes(buf.getvalue()).pixels, _full_size(buf.getvalue())) > 0.97


def test_preprocess_big_jpeg_keeps_its_exif_orientation():
    canvas = np.full((1200, 4000), 255, np.uint8)
    canvas[500:700, 400:3600] = 0  # a horizontal bar, stored sideways
    img = Image.fromarray(canvas)
    exif = img.getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    p = prepare_bytes(buf.getvalue())
    rows = np.flatnonzero((p.pixels > 0.3).any(1))
    cols = np.flatnonzero((p.pixels > 0.3).any(0))
    assert rows[-1] - rows[0] > 3 * (cols[-1] - cols[0])  # upright: a vertical bar


def test_preprocess_full_decode_cap_spares_jpeg():
    canvas = _bar_picture(4000, 3000)  # 12 megapixels
    png, jpeg = io.BytesIO(), io.BytesIO()
    Image.fromarray(canvas).save(png, "PNG")
    Image.fromarray(canvas).save(jpeg, "JPEG")
    with pytest.raises(ImageError, match="limit of 10000000 for PNG") as info:
        open_image(png.getvalue(), max_pixels=25_000_000, max_full_decode_pixels=10_000_000)
    assert info.value.code == "image_too_large"
    assert open_image(jpeg.getvalue(), max_pixels=25_000_000, max_full_decode_pixels=10_000_000).size == (4000, 3000)


@pytest.mark.parametrize("keyword", ["comment", "XML:com.adobe.xmp"])
def test_png_with_a_text_chunk_bomb_is_read_and_the_text_left_out(keyword):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(keyword, "x" * 2_000_000, zip=True)  # 2 MB of text in ~2 KB of upload
    buf = io.BytesIO()
    Image.fromarray(np.zeros((300, 300), np.uint8)).save(buf, "PNG", pnginfo=info)
    assert len(buf.getvalue()) < 10_000
    image = open_image(buf.getvalue())
    assert image.size == (300, 300) and keyword not in image.info


def test_picture_in_a_colour_space_pillow_cannot_convert_is_refused_by_name():
    import io

    from model.preprocess import ImageError, prepare_bytes

    buf = io.BytesIO()
    Image.new("LAB", (40, 40), (50, 0, 0)).save(buf, "TIFF")  # a CIELab TIFF: no conversion to grayscale
    with pytest.raises(ImageError) as err:
        prepare_bytes(buf.getvalue())
    assert err.value.code == "unsupported_format" and "LAB" in str(err.value)
