"""The SPEC §3 strong-op pool as the authors apply it: PIL, one image at a time, in loader
workers. Same ops, magnitude mappings and draws as `imas.intensity` (u ∈ [0,1), larger u is
stronger), written with PIL's ImageOps/ImageEnhance/ImageFilter for the augmentation benchmark.
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps


def _factor(u: float) -> float:
    return 0.95 - 0.85 * u


def _hue(img: Image.Image, u: float, sign: int) -> Image.Image:
    h, s, v = img.convert("HSV").split()
    shift = round(sign * 0.5 * u * 256)
    h = Image.fromarray(((np.asarray(h, dtype=np.int16) + shift) % 256).astype(np.uint8), "L")
    return Image.merge("HSV", (h, s, v)).convert("RGB")


def apply_op(img: Image.Image, name: str, u: float, sign: int) -> Image.Image:
    """One op of the pool on an RGB PIL image."""
    if name == "identity":
        return img.copy()
    if name == "autocontrast":
        return ImageOps.autocontrast(img)
    if name == "equalize":
        return ImageOps.equalize(img)
    if name == "invert":
        return ImageOps.invert(img)
    if name == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=0.1 + 1.9 * u))
    if name == "contrast":
        return ImageEnhance.Contrast(img).enhance(_factor(u))
    if name == "brightness":
        return ImageEnhance.Brightness(img).enhance(_factor(u))
    if name == "colour":
        return ImageEnhance.Color(img).enhance(_factor(u))
    if name == "sharpness":
        return ImageEnhance.Sharpness(img).enhance(_factor(u))
    if name == "posterize":
        return ImageOps.posterize(img, 7 - min(math.floor(4 * u), 3))
    if name == "solarize":
        return ImageOps.solarize(img, 256 - round(255 * u))
    if name == "hue":
        return _hue(img, u, sign)
    raise ValueError(f"unknown op {name!r}")


def pil_strong_view(
    img: Image.Image, k: int, names: tuple[str, ...], rng: random.Random
) -> Image.Image:
    """k ops drawn uniformly with replacement, each with its own u and hue direction."""
    for _ in range(k):
        img = apply_op(img, rng.choice(names), rng.random(), rng.choice((-1, 1)))
    return img
