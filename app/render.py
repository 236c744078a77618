"""Attention heatmaps drawn over the digit the model saw, as PNG (Pillow only)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# "inferno"-like ramp: black -> purple -> orange -> pale yellow
_STOPS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32)


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> RGB uint8, by linear interpolation between the colour stops."""
    pos = np.clip(values, 0, 1) * (len(_STOPS) - 1)
    low = np.floor(pos).astype(int).clip(0, len(_STOPS) - 2)
    frac = (pos - low)[..., None]
    return (_STOPS[low] * (1 - frac) + _STOPS[low + 1] * frac).astype(np.uint8)


def heatmap_png(digit: np.ndarray, heat: np.ndarray, size: int = 280, alpha: float = 0.55) -> bytes:
    """The digit (H, W in [0, 1]) in gray with ``heat`` (g, g) upsampled and blended over it."""
    base = Image.fromarray((digit * 255).astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
    h = heat / heat.max() if heat.max() > 0 else heat
    heat_img = Image.fromarray((h * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR)
    coloured = colormap(np.asarray(heat_img, dtype=np.float32) / 255)
    gray = np.asarray(base.convert("RGB"), dtype=np.float32)
    blended = (gray * (1 - alpha) + coloured * alpha).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(blended).save(buf, "PNG")
    return buf.getvalue()
