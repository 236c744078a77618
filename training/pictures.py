"""Pictures as callers send them: things that are not digits, and real digits staged like uploads.

Both sets are generated, deterministically from a seed, with Pillow and NumPy and the fonts and
sample pictures that matplotlib ships (so every machine with the pinned packages draws the same
pictures). They serve three purposes:

- **outlier exposure**: the not-a-digit kinds in :data:`TRAIN_KINDS` are shown to the model in
  training (with a uniform target), and their validation draws choose the ``is_digit`` threshold;
- **held-out evaluation**: the kinds in :data:`HELD_OUT_KINDS` are never used for training or the
  threshold; the figures that count are theirs;
- **staged digits**: MNIST digits drawn the way users send them (large canvases, coloured ink and
  paper, thick and thin pens, JPEG, photographed paper, off-centre, rotated), and typed digits.

Every picture goes through the service's own preprocessing (:func:`model.preprocess.prepare`), so
a letter is cropped and centred exactly as the service would crop and centre it.
"""

from __future__ import annotations

import hashlib
import io
import math
import string
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from model import preprocess
from model.preprocess import ImageError, decode_image, prepare

Rng = np.random.Generator
Maker = Callable[[Rng], Image.Image]

# Glyphs that *are* digits in most typefaces (O and o are a zero, I, l and | a one, / a slanted one)
# are not negatives: a caller who sends them gets a digit, as a person reading them would say.
LETTERS = "".join(c for c in string.ascii_letters if c not in "OoIl")
# Greek and Cyrillic letters, drawn as a share of the letters kind (outlier exposure beyond the Latin
# alphabet's shapes), without the ones that read as a digit (omicron and O, theta for a barred 0,
# iota, I and lambda for 1, ze and e for 3, che for 4, be for 5 or 6, delta for 8) and those of the
# held-out symbols (Omega, Sigma, Pi)
SCRIPT_LETTERS = "".join(
    c
    for c in "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩαβγδεζηθικλμνξοπρστυφχψω"
    "АБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯабвгдежзийклмнопрстуфхцчшщъыьэюя"
    if c not in "ΟοΘθΙιΛΩΣΠδЗзОоІіБбЧчЭэ"
)
SYMBOLS = "+-×÷=%&@#$€£¥?*§¶~^<>{}[]()\\:;\"'_•→←↑↓✓✗★♥♦♣♠∞≈≠±√∑∏∫Ω"
WORDS = ("cat", "hello", "TOTAL", "Name", "yes", "no", "abc", "XYZ", "date", "Sum", "ok", "hi", "done", "kg")


@dataclass(frozen=True)
class Picture:
    """One generated picture: the image as a caller would send it, and what it is."""

    image: Image.Image
    kind: str
    label: int = -1  # the digit for staged digits, -1 for not-a-digit pictures


# ---------------------------------------------------------------------------------------------
# fonts and paper


@cache
def fonts() -> tuple[Path, ...]:
    """Text typefaces shipped with matplotlib: DejaVu (sans, serif, mono), STIX and Computer Modern."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    # symbol and size-variant faces, and DejaVu's "Display" faces, which hold no letters or
    # digits at all (they drew blank pages, which the service refuses as ``no_digit``)
    skip = ("STIXNonUni", "STIXSiz", "cmex", "cmsy", "LastResort")
    return tuple(p for p in sorted(folder.glob("*.ttf")) if not p.name.startswith(skip) and "Display" not in p.name)


def symbol_fonts() -> tuple[Path, ...]:
    """The DejaVu faces, which hold every one of :data:`SCRIPT_LETTERS` and, between them, every one
    of :data:`SYMBOLS` (:func:`holding` says which)."""
    return tuple(p for p in fonts() if p.name.startswith("DejaVu"))


def glyph_image(text: str, face: Path) -> np.ndarray:
    """``text`` drawn black on white in ``face`` at 48 points, as a 96x96 array."""
    image = Image.new("L", (96, 96), 255)
    ImageDraw.Draw(image).text((16, 8), text, fill=0, font=ImageFont.truetype(str(face), 48))
    return np.asarray(image)


@cache
def holding(glyph: str, faces: tuple[Path, ...]) -> tuple[Path, ...]:
    """The faces that hold ``glyph``: a face without it draws its "missing glyph" box instead (the
    one it draws for a private-use code point), as DejaVu's serif and oblique mono faces do for
    a check mark, a cross and a star."""
    return tuple(face for face in faces if not np.array_equal(glyph_image(glyph, face), glyph_image("\ue000", face)))


def digit_fonts() -> tuple[Path, ...]:
    """The typefaces whose 0-9 are lining digits (cmmi10 has old-style figures)."""
    return tuple(p for p in fonts() if not p.name.startswith("cmmi"))


def _paper_and_ink(rng: Rng) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Mostly dark ink on light paper, sometimes light on dark (a chalkboard, a dark-mode canvas)."""
    light = tuple(int(v) for v in rng.integers(200, 256, size=3))
    dark = tuple(int(v) for v in rng.integers(0, 90, size=3))
    if rng.random() < 0.2:
        return dark, light  # type: ignore[return-value]
    return light, dark  # type: ignore[return-value]


def _canvas(rng: Rng, low: int = 64, high: int = 480) -> tuple[Image.Image, ImageDraw.ImageDraw, tuple[int, ...]]:
    size = int(rng.integers(low, high))
    paper, ink = _paper_and_ink(rng)
    image = Image.new("RGB", (size, size), paper)
    return image, ImageDraw.Draw(image), ink


def _text(rng: Rng, text: str, font_list: tuple[Path, ...]) -> Image.Image:
    """``text`` in a random typeface, size and slant, somewhere on a page."""
    image, draw, ink = _canvas(rng)
    side = image.size[0]
    font = ImageFont.truetype(str(font_list[int(rng.integers(len(font_list)))]), int(side * rng.uniform(0.25, 0.6)))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = rng.uniform(-left, max(side - right, -left + 1))
    y = rng.uniform(-top, max(side - bottom, -top + 1))
    draw.text((x, y), text, fill=ink, font=font)
    return image.rotate(float(rng.uniform(-12, 12)), fillcolor=image.getpixel((0, 0)))


# ---------------------------------------------------------------------------------------------
# the not-a-digit kinds


def letter(rng: Rng) -> Image.Image:
    """A Latin letter in any typeface, or (one in four) a Greek or Cyrillic one in DejaVu's."""
    if rng.random() < 0.25:
        return _text(rng, SCRIPT_LETTERS[int(rng.integers(len(SCRIPT_LETTERS)))], symbol_fonts())
    return _text(rng, LETTERS[int(rng.integers(len(LETTERS)))], fonts())


def symbol(rng: Rng) -> Image.Image:
    glyph = SYMBOLS[int(rng.integers(len(SYMBOLS)))]
    return _text(rng, glyph, holding(glyph, symbol_fonts()))


# Symbols a form or a receipt puts beside digits, which a digit model is most easily fooled by; the
# trust report gives them a row of their own (they are part of the held-out "symbols" kind too).
COMMON_SYMBOLS = "?&§%@$"


def common_symbol(rng: Rng) -> Image.Image:
    """One of :data:`COMMON_SYMBOLS` in one of the DejaVu faces that hold it."""
    glyph = COMMON_SYMBOLS[int(rng.integers(len(COMMON_SYMBOLS)))]
    return _text(rng, glyph, holding(glyph, symbol_fonts()))


def common_symbols(count: int, seed: int) -> list[Picture]:
    """``count`` pictures of :data:`COMMON_SYMBOLS`, kind ``common_symbols``."""
    rng = np.random.default_rng([seed, 98])
    return [Picture(common_symbol(rng), "common_symbols") for _ in range(count)]


def word(rng: Rng) -> Image.Image:
    return _text(rng, WORDS[int(rng.integers(len(WORDS)))], fonts())


def shape(rng: Rng) -> Image.Image:
    """A square, rectangle, ellipse, triangle, polygon or star, outlined or filled."""
    image, draw, ink = _canvas(rng)
    s = image.size[0]
    cx, cy, r = s * rng.uniform(0.3, 0.7), s * rng.uniform(0.3, 0.7), s * rng.uniform(0.15, 0.35)
    width = max(1, int(s * rng.uniform(0.01, 0.08)))
    fill = ink if rng.random() < 0.4 else None
    kind = int(rng.integers(5))
    if kind == 0:
        box = [cx - r, cy - r * rng.uniform(0.4, 1.0), cx + r, cy + r * rng.uniform(0.4, 1.0)]
        draw.rectangle(box, outline=ink, fill=fill, width=width)
    elif kind == 1:
        draw.ellipse([cx - r, cy - r * rng.uniform(0.3, 0.7), cx + r, cy + r * rng.uniform(0.3, 0.7)], outline=ink,
                     fill=fill, width=width)  # fmt: skip
    else:
        corners = (3, int(rng.integers(5, 9)), 10)[kind - 2]
        start = rng.uniform(0, 2 * math.pi)
        points = []
        for i in range(corners):
            radius = r * (0.45 if kind == 4 and i % 2 else 1.0)
            angle = start + 2 * math.pi * i / corners
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        draw.polygon(points, outline=ink, fill=fill, width=width)
    return image


def scribble(rng: Rng) -> Image.Image:
    """A random pen stroke: a smooth curve through 4-10 random points, sometimes two."""
    image, draw, ink = _canvas(rng)
    s = image.size[0]
    for _ in range(int(rng.integers(1, 3))):
        points = rng.uniform(0.1 * s, 0.9 * s, size=(int(rng.integers(4, 11)), 2))
        t = np.linspace(0, 1, 80)
        # a smooth path: the control points blended with a sliding Gaussian kernel
        weights = np.exp(-(((t[:, None] - np.linspace(0, 1, len(points))[None]) * len(points)) ** 2))
        path = (weights @ points) / weights.sum(1, keepdims=True)
        draw.line([tuple(p) for p in path], fill=ink, width=max(1, int(s * rng.uniform(0.01, 0.06))), joint="curve")
    return image


def noise(rng: Rng) -> Image.Image:
    """Uniform, Gaussian, salt-and-pepper or blocky noise."""
    s = int(rng.integers(28, 400))
    kind = int(rng.integers(4))
    if kind == 0:
        a = rng.uniform(0, 255, size=(s, s, 3))
    elif kind == 1:
        a = rng.normal(rng.uniform(60, 200), rng.uniform(20, 80), size=(s, s, 1)).repeat(3, 2)
    elif kind == 2:
        a = np.where(rng.random((s, s, 1)) < rng.uniform(0.02, 0.3), 0.0, 255.0).repeat(3, 2)
    else:
        block = int(rng.integers(2, 12))
        a = rng.uniform(0, 255, size=(block, block, 1)).repeat(3, 2)
        return Image.fromarray(a.astype(np.uint8)).resize((s, s), Image.Resampling.NEAREST)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def texture(rng: Rng) -> Image.Image:
    """Stripes, a grating, a checkerboard or a grid of dots."""
    s = int(rng.integers(48, 400))
    y, x = np.mgrid[0:s, 0:s].astype(np.float32)
    angle, period = rng.uniform(0, math.pi), s / rng.uniform(3, 16)
    u = x * math.cos(angle) + y * math.sin(angle)
    v = -x * math.sin(angle) + y * math.cos(angle)
    kind = int(rng.integers(4))
    if kind == 0:
        a = (np.sin(2 * math.pi * u / period) > 0).astype(np.float32)
    elif kind == 1:
        a = 0.5 + 0.5 * np.sin(2 * math.pi * u / period) * np.sin(2 * math.pi * v / (period * rng.uniform(0.5, 2)))
    elif kind == 2:
        a = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    else:
        a = (np.mod(u, period) - period / 2) ** 2 + (np.mod(v, period) - period / 2) ** 2 < (period / 4) ** 2
        a = a.astype(np.float32)
    paper, ink = _paper_and_ink(rng)
    rgb = np.asarray(paper, np.float32) + a[..., None] * (np.asarray(ink, np.float32) - np.asarray(paper, np.float32))
    return Image.fromarray(rgb.astype(np.uint8))


@cache
def _photos() -> tuple[np.ndarray, ...]:
    """matplotlib's sample pictures: a portrait photo, a product photo, and two terrain maps."""
    import matplotlib.cbook as cbook

    out = []
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):
        out.append(np.asarray(Image.open(cbook.get_sample_data(name, asfileobj=False)).convert("RGB")))
    for name, key in (("jacksboro_fault_dem.npz", "elevation"), ("topobathy.npz", "topo")):
        grid = np.load(cbook.get_sample_data(name, asfileobj=False))[key].astype(np.float32)
        grid = (grid - grid.min()) / max(float(np.ptp(grid)), 1e-6) * 255
        out.append(np.repeat(grid[..., None], 3, axis=2).astype(np.uint8))
    return tuple(out)


def photo(rng: Rng) -> Image.Image:
    """A random crop of a photo or terrain map, or a 'dead leaves' picture of overlapping discs
    (a standard stand-in for the statistics of natural images)."""
    if rng.random() < 0.6:
        pictures = _photos()
        source = pictures[int(rng.integers(len(pictures)))]
        h, w = source.shape[:2]
        side = int(rng.integers(min(h, w) // 8, min(h, w)))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(source[top : top + side, left : left + side])
        return crop.resize((min(side, 400),) * 2)
    image, draw, _ = _canvas(rng, 96, 400)
    s = image.size[0]
    for _ in range(int(rng.integers(20, 120))):
        r = s * rng.uniform(0.02, 0.25) ** 1.5 * 2
        cx, cy = rng.uniform(0, s, size=2)
        color = tuple(int(v) for v in rng.integers(0, 256, size=3))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.5)))


def near_empty(rng: Rng) -> Image.Image:
    """A blank page with a speck, a smudge, a fold line or a few dust dots."""
    image, draw, ink = _canvas(rng, 96, 600)
    s = image.size[0]
    kind = int(rng.integers(3))
    if kind == 0:  # a speck or smudge
        r = s * rng.uniform(0.005, 0.03)
        cx, cy = rng.uniform(0.1 * s, 0.9 * s, size=2)
        draw.ellipse([cx - r, cy - r * rng.uniform(0.5, 1.5), cx + r, cy + r], fill=ink)
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0, r / 2 + 0.1)))
    elif kind == 1:  # a faint fold or ruled line across the page
        y = rng.uniform(0.1 * s, 0.9 * s)
        draw.line([(0, y), (s, y + rng.uniform(-0.1 * s, 0.1 * s))], fill=ink, width=max(1, int(s * 0.004)))
    else:  # dust
        for _ in range(int(rng.integers(2, 8))):
            cx, cy = rng.uniform(0, s, size=2)
            r = s * rng.uniform(0.002, 0.01)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=ink)
    return image


def code(rng: Rng) -> Image.Image:
    """A barcode or a QR-like grid of modules."""
    image, draw, ink = _canvas(rng, 96, 400)
    s = image.size[0]
    margin = s * 0.1
    if rng.random() < 0.5:
        x = margin
        while x < s - margin:
            w = s * rng.uniform(0.005, 0.03)
            if rng.random() < 0.5:
                draw.rectangle([x, margin * 2, x + w, s - margin * 2], fill=ink)
            x += w
    else:
        n = int(rng.integers(11, 30))
        cell = (s - 2 * margin) / n
        for i, j in zip(*np.nonzero(rng.random((n, n)) < 0.5), strict=True):
            draw.rectangle([margin + j * cell, margin + i * cell, margin + (j + 1) * cell, margin + (i + 1) * cell],
                           fill=ink)  # fmt: skip
    return image


KINDS: dict[str, Maker] = {
    "letters": letter,
    "shapes": shape,
    "scribbles": scribble,
    "noise": noise,
    "textures": texture,
    "symbols": symbol,
    "words": word,
    "photos": photo,
    "near_empty": near_empty,
    "codes": code,
}
TRAIN_KINDS = ("letters", "shapes", "scribbles", "noise", "textures")  # outlier exposure, threshold
HELD_OUT_KINDS = ("symbols", "words", "photos", "near_empty", "codes")  # evaluation only


# ---------------------------------------------------------------------------------------------
# staged digits


# The threshold is fitted on staged validation digits of FIT_STAGINGS only; the HELD_OUT_STAGINGS
# are drawn for evaluation alone, so their figures say how the verdict carries to pictures it was
# not tuned on (as the held-out kinds of non-digits do).
FIT_STAGINGS = ("clean", "canvas", "color", "thick", "thin", "jpeg", "photo", "offcenter", "rotated", "dark",
                "tight", "blurred", "marker")  # fmt: skip
HELD_OUT_STAGINGS = ("tiny", "pencil", "boxed", "neighbour")
STAGINGS = FIT_STAGINGS + HELD_OUT_STAGINGS


def stage_digit(digit: np.ndarray, rng: Rng, staging: str) -> Image.Image:
    """A 28x28 MNIST digit (light on dark, uint8) drawn the way a user might send it.

    ``clean``: the digit as a 28x28 PNG; ``canvas``: a large white canvas; ``color``: coloured ink
    on coloured paper; ``thick``/``thin``: a wider or narrower pen; ``jpeg``: low-quality JPEG;
    ``photo``: photographed paper (uneven light, blur, sensor noise, JPEG); ``offcenter``: small,
    in a corner of a page; ``rotated``: turned by up to 12 degrees; ``dark``: light ink on a dark
    board. All but ``clean`` and ``dark`` are dark ink on light paper.
    """
    ink_map = Image.fromarray(digit)
    if staging == "clean":
        return ink_map
    if staging in CALLER_STAGINGS:
        return CALLER_STAGINGS[staging](digit, rng)
    side = int(rng.integers(96, 600))
    scale = rng.uniform(0.5, 0.9) if staging != "offcenter" else rng.uniform(0.15, 0.3)
    glyph = ink_map.resize((max(8, int(side * scale)),) * 2, Image.Resampling.BICUBIC)
    if staging in ("thick", "thin"):
        k = max(3, int(glyph.size[0] / 28 * (1.6 if staging == "thick" else 1.0)) | 1)
        glyph = glyph.filter(ImageFilter.MaxFilter(k) if staging == "thick" else ImageFilter.MinFilter(k))
    if staging == "rotated":
        glyph = glyph.rotate(float(rng.uniform(-12, 12)) or 5.0, resample=Image.Resampling.BICUBIC)
    alpha = Image.new("L", (side, side), 0)
    room = side - glyph.size[0]
    if staging == "offcenter":
        left, top = (int(rng.choice([rng.uniform(0, room * 0.2), rng.uniform(room * 0.8, room)])) for _ in range(2))
    else:
        left, top = int(rng.uniform(0, room)), int(rng.uniform(0, room))
    alpha.paste(glyph, (left, top))
    paper, ink = (255, 255, 255), (0, 0, 0)
    if staging == "color":
        paper, ink = _paper_and_ink(rng)
        if sum(paper) < sum(ink):
            paper, ink = ink, paper
    elif staging == "dark":
        paper, ink = (30, 40, 35), (235, 235, 230)
    image = Image.composite(Image.new("RGB", alpha.size, ink), Image.new("RGB", alpha.size, paper), alpha)
    if staging == "photo":
        image = _photographed(image, rng)
    if staging in ("jpeg", "photo"):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(25 if staging == "jpeg" else 50, 80)))
        image = Image.open(io.BytesIO(buffer.getvalue()))
    return image


def _photographed(image: Image.Image, rng: Rng) -> Image.Image:
    """Uneven light across the page, a slight blur, and sensor noise."""
    a = np.asarray(image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5))), dtype=np.float32)
    s = a.shape[0]
    y, x = np.mgrid[0:s, 0:s] / s
    light = 1.0 - rng.uniform(0.1, 0.35) * (x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1) + 1) / 2
    a = a * light[..., None] * np.asarray([1.0, rng.uniform(0.95, 1.0), rng.uniform(0.85, 1.0)])
    a += rng.normal(0, rng.uniform(2, 8), size=a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _ink_crop(digit: np.ndarray) -> Image.Image:
    """The digit (light on dark) cropped to its ink."""
    rows, cols = np.flatnonzero((digit > 40).any(axis=1)), np.flatnonzero((digit > 40).any(axis=0))
    return Image.fromarray(digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])


def _glyph(digit: np.ndarray, height: int, pen: float = 1.0, blur: float = 0.0) -> Image.Image:
    """The digit cropped to its ink, ``height`` pixels tall (its aspect kept), its strokes ``pen``
    times as wide as MNIST's and blurred by a Gaussian of ``blur`` pixels at 28-pixel scale."""
    crop = _ink_crop(digit)
    width = max(2, round(height * crop.size[0] / crop.size[1]))
    glyph = crop.resize((width, height), Image.Resampling.BICUBIC)
    per_px = height / 20  # MNIST digits are 20 pixels tall
    if pen > 1.0:
        glyph = glyph.filter(ImageFilter.MaxFilter(max(3, round((pen - 1.0) * 2.5 * per_px) | 1)))
    elif pen < 1.0:
        glyph = glyph.filter(ImageFilter.MinFilter(max(3, round((1.0 - pen) * 2.5 * per_px) | 1)))
    if blur > 0:
        glyph = glyph.filter(ImageFilter.GaussianBlur(blur * per_px * 20 / 28))
    return glyph


def _on_paper(glyph: Image.Image, margin: tuple[int, int, int, int] = (0, 0, 0, 0), ink: int = 0,
              paper: int = 255) -> Image.Image:  # fmt: skip
    """``glyph`` (its ink as light values) drawn in ``ink`` on ``paper``, with (left, top, right,
    bottom) pixels of paper around it."""
    left, top, right, bottom = margin
    alpha = Image.new("L", (glyph.size[0] + left + right, glyph.size[1] + top + bottom), 0)
    alpha.paste(glyph, (left, top))
    return Image.composite(Image.new("L", alpha.size, ink), Image.new("L", alpha.size, paper), alpha).convert("RGB")


def _small_margin(rng: Rng, side: int, most: float = 0.06) -> tuple[int, int, int, int]:
    return tuple(int(rng.integers(0, max(1, round(most * side)) + 1)) for _ in range(4))  # type: ignore[return-value]


def _tight(digit: np.ndarray, rng: Rng) -> Image.Image:
    """Cropped to the ink by the caller: the strokes touch (or nearly touch) the picture's edges,
    40-240 pixels tall, with an ordinary or a somewhat thick pen, sometimes a little soft."""
    height = int(rng.integers(40, 240))
    blur = float(rng.uniform(0.3, 1.2)) if rng.random() < 0.5 else 0.0
    glyph = _glyph(digit, height, pen=float(rng.uniform(0.9, 1.6)), blur=blur)
    return _on_paper(glyph, _small_margin(rng, height, 0.03))


def _tiny(digit: np.ndarray, rng: Rng) -> Image.Image:
    """A low-resolution scan or a thumbnail: the digit 8-16 pixels tall, sent at that size or (two in
    three) enlarged 4-12 times with bilinear or bicubic resampling, as a browser or a phone does."""
    height = int(rng.integers(8, 17))
    crop = _ink_crop(digit)
    glyph = crop.resize((max(2, round(height * crop.size[0] / crop.size[1])), height), Image.Resampling.BOX)
    image = _on_paper(glyph, _small_margin(rng, height, 0.2))
    if rng.random() < 2 / 3:
        factor = float(rng.uniform(4, 12))
        method = Image.Resampling.BILINEAR if rng.random() < 0.5 else Image.Resampling.BICUBIC
        image = image.resize((round(image.size[0] * factor), round(image.size[1] * factor)), method)
    return image


def _blurred(digit: np.ndarray, rng: Rng) -> Image.Image:
    """Out of focus: a Gaussian blur of 1-3 pixels at 28-pixel scale, on a page with some room."""
    height = int(rng.integers(60, 300))
    glyph = _glyph(digit, height, pen=float(rng.uniform(1.0, 1.4)), blur=float(rng.uniform(1.0, 3.0)))
    return _on_paper(glyph, _small_margin(rng, height, 0.5))


def _marker(digit: np.ndarray, rng: Rng) -> Image.Image:
    """A thick, soft felt marker: strokes 1.8-2.5 times MNIST's width, their edges blurred."""
    height = int(rng.integers(60, 300))
    glyph = _glyph(digit, height, pen=float(rng.uniform(1.8, 2.5)), blur=float(rng.uniform(0.5, 1.5)))
    return _on_paper(glyph, _small_margin(rng, height, 0.3))


def _pencil(digit: np.ndarray, rng: Rng) -> Image.Image:
    """Faint grey pencil on white: thin strokes at 25-55% of full ink, grainy along the stroke."""
    height = int(rng.integers(60, 300))
    glyph = np.asarray(_glyph(digit, height, pen=float(rng.uniform(0.7, 1.0))), np.float32) / 255
    grain = rng.uniform(0.45, 1.0, size=glyph.shape)  # graphite leaves paper showing through
    strength = rng.uniform(0.25, 0.55)
    ink = Image.fromarray(np.clip(glyph * grain * strength * 255, 0, 255).astype(np.uint8))
    return _on_paper(ink, _small_margin(rng, height, 0.4), ink=0, paper=int(rng.integers(235, 256)))


def _boxed(digit: np.ndarray, rng: Rng) -> Image.Image:
    """On a form: inside a printed box whose lines touch the digit, or on ruled or squared paper whose
    lines cross it."""
    height = int(rng.integers(60, 240))
    glyph = _glyph(digit, height)
    pad = round(height * rng.uniform(0.0, 0.15))
    image = _on_paper(glyph, (pad, pad, pad, pad)).convert("L")
    draw = ImageDraw.Draw(image)
    w, h = image.size
    grey = int(rng.integers(60, 170))
    line = max(1, round(height * rng.uniform(0.01, 0.04)))
    kind = int(rng.integers(3))
    if kind == 0:  # a printed box around the digit
        inset = int(rng.integers(0, max(1, pad // 2 + 1)))
        draw.rectangle([inset, inset, w - 1 - inset, h - 1 - inset], outline=grey, width=line)
    else:  # ruled lines, and for squared paper columns too
        gap = height * rng.uniform(0.3, 0.6)
        y = rng.uniform(0, gap)
        while y < h:
            draw.line([(0, y), (w, y)], fill=grey, width=line)
            y += gap
        if kind == 2:
            x = rng.uniform(0, gap)
            while x < w:
                draw.line([(x, 0), (x, h)], fill=grey, width=line)
                x += gap
    ink = np.asarray(_on_paper(glyph, (pad, pad, pad, pad)).convert("L"))
    return Image.fromarray(np.minimum(np.asarray(image), ink)).convert("RGB")


def _neighbour(digit: np.ndarray, rng: Rng) -> Image.Image:
    """A crop out of a number: the digit whole, and at its left or right a sliver of the next digit
    (the near edge of a turned copy of this one, 7-20% of the height wide) that the crop's edge cuts
    through, a gap of -5% to 15% of the height away (below zero the two overlap and may touch); or
    a comma at the bottom right."""
    height = int(rng.integers(60, 240))
    glyph = _glyph(digit, height)
    w, h = glyph.size
    pad = round(height * rng.uniform(0.05, 0.2))
    if rng.random() < 0.7:  # part of a neighbouring digit
        other = _glyph(np.rot90(digit, int(rng.integers(1, 4))).copy(), height)
        # as many draws as the staging has always taken, so that a staged set's other pictures keep
        # theirs: the second gives the side (its first half or second) and the gap (where in the half)
        show = max(2, min(other.size[0], round(height * (0.07 + 0.65 * (rng.uniform(0.1, 0.3) - 0.1)))))
        side = rng.random()
        gap = round(height * (-0.05 + 0.2 * (2 * side % 1)))
        width = pad + w + gap + show  # the digit's paper on one side; the other ends in the sliver
        canvas, sliver = Image.new("L", (width, h + 2 * pad), 0), Image.new("L", (width, h + 2 * pad), 0)
        if side < 0.5:  # on the left: the right edge of the digit before
            canvas.paste(glyph, (show + gap, pad))
            sliver.paste(other.crop((other.size[0] - show, 0, other.size[0], h)), (0, pad))
        else:  # on the right: the left edge of the digit after
            canvas.paste(glyph, (pad, pad))
            sliver.paste(other.crop((0, 0, show, h)), (width - show, pad))
        return _on_paper(ImageChops.lighter(canvas, sliver))  # overlapping strokes cross, none erased
    canvas = Image.new("L", (w + 2 * pad, h + 2 * pad), 0)
    canvas.paste(glyph, (pad, pad))
    r = max(2, round(height * 0.06))  # a comma after the digit
    x, y = canvas.size[0] - 2 * r - 1, canvas.size[1] - 3 * r - 1
    draw = ImageDraw.Draw(canvas)
    draw.ellipse([x, y, x + 2 * r, y + 2 * r], fill=255)
    draw.line([(x + 2 * r, y + r), (x + r, y + 3 * r)], fill=255, width=max(1, r))
    return _on_paper(canvas)


CALLER_STAGINGS: dict[str, Callable[[np.ndarray, Rng], Image.Image]] = {
    "tight": _tight,
    "tiny": _tiny,
    "blurred": _blurred,
    "marker": _marker,
    "pencil": _pencil,
    "boxed": _boxed,
    "neighbour": _neighbour,
}


def typed_digit(rng: Rng) -> tuple[Image.Image, int]:
    """A digit typed in one of the shipped typefaces, and its label."""
    label = int(rng.integers(10))
    return _text(rng, str(label), digit_fonts()), label


# ---------------------------------------------------------------------------------------------
# sets of model inputs


@dataclass(frozen=True)
class PictureSet:
    """Preprocessed pictures as the model sees them: uint8 (N, 28, 28), light on dark, with each
    picture's kind (or staging) and label (-1 for not-a-digit); pictures the service would refuse
    (no ink at all: 422 ``no_digit``) are counted in ``refused`` and left out."""

    images: np.ndarray
    kinds: np.ndarray
    labels: np.ndarray
    refused: dict[str, int]


def to_model_input(image: Image.Image, size: int = 28) -> np.ndarray:
    """The service's preprocessing of ``image`` (after a PNG round trip, as an upload), as uint8."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")  # lossless: a JPEG-staged picture keeps its artefacts
    pixels = prepare(decode_image(buffer.getvalue()), size=size).pixels
    return np.asarray(np.round(pixels * 255), dtype=np.uint8)


def build_set(pictures: list[Picture]) -> PictureSet:
    """Preprocess ``pictures`` as the service would."""
    images, kinds, labels = [], [], []
    refused: dict[str, int] = {}
    for p in pictures:
        try:
            images.append(to_model_input(p.image))
        except ImageError:
            refused[p.kind] = refused.get(p.kind, 0) + 1
            continue
        kinds.append(p.kind)
        labels.append(p.label)
    return PictureSet(
        np.stack(images) if images else np.zeros((0, 28, 28), np.uint8), np.asarray(kinds), np.asarray(labels), refused
    )


def non_digits(kinds: tuple[str, ...], per_kind: int, seed: int) -> list[Picture]:
    """``per_kind`` pictures of each kind, seeded per kind (adding a kind changes no other)."""
    out = []
    for kind in kinds:
        rng = np.random.default_rng([seed, sorted(KINDS).index(kind)])
        out += [Picture(KINDS[kind](rng), kind) for _ in range(per_kind)]
    return out


def staged_digits(
    digits: np.ndarray, labels: np.ndarray, seed: int, typed: int = 0, stagings: tuple[str, ...] = STAGINGS
) -> list[Picture]:
    """Each digit staged once, ``stagings`` in turn; plus ``typed`` typed digits."""
    rng = np.random.default_rng(seed)
    out = [
        Picture(stage_digit(d, rng, stagings[i % len(stagings)]), stagings[i % len(stagings)], int(y))
        for i, (d, y) in enumerate(zip(digits, labels, strict=True))
    ]
    for _ in range(typed):
        image, label = typed_digit(rng)
        out.append(Picture(image, "typed", label))
    return out


def typed_digit_pictures(count: int, seed: int) -> list[Picture]:
    """``count`` typed digits."""
    rng = np.random.default_rng([seed, 99])
    pictures = []
    for _ in range(count):
        image, label = typed_digit(rng)
        pictures.append(Picture(image, "typed", label))
    return pictures


def _generator_digest() -> str:
    """A digest of the code that draws and preprocesses the pictures: a cached set made by other code
    is made anew (the drawings here and the service's preprocessing, which changes more often)."""
    code = Path(__file__).read_bytes() + Path(preprocess.__file__).read_bytes()
    return hashlib.sha256(code).hexdigest()[:12]


# read once, at import: a process that runs for an hour keys its sets by the code it runs, not by
# what the files hold by the time it draws them
GENERATOR_DIGEST = _generator_digest()


CACHE = Path(".cache/pictures")


def picture_set(name: str, make: Callable[[int, int], list[Picture]], count: int, seed: int) -> PictureSet:
    """``build_set(make(count, seed))``, cached in ``.cache/pictures`` (drawing and preprocessing
    thousands of pictures takes a minute or two)."""
    path = CACHE / f"{name}-{count}-{seed}-{GENERATOR_DIGEST}.npz"
    if path.is_file():
        with np.load(path) as data:
            refused = {str(k): int(v) for k, v in zip(data["refused_kinds"], data["refused_counts"], strict=True)}
            return PictureSet(data["images"], data["kinds"], data["labels"], refused)
    pictures = build_set(make(count, seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp,
        images=pictures.images,
        kinds=pictures.kinds,
        labels=pictures.labels,
        refused_kinds=np.asarray(list(pictures.refused), dtype=str),
        refused_counts=np.asarray(list(pictures.refused.values()), dtype=np.int64),
    )
    tmp.replace(path)
    return pictures
