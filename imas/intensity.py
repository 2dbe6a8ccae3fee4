"""The strong intensity-op pool of SPEC §3, applied on the device to uint8 weak views.

Magnitude convention: every op takes u ∈ [0,1], and larger u is always stronger (further from
the input). u = 0 is each op's weakest setting, which is what makes the optional
hardness-scaled magnitude (u · easiness) meaningful. The mappings:

    identity, autocontrast, equalize, invert   no magnitude
    blur        σ = 0.1 + 1.9·u                               σ ∈ [0.1, 2.0)
    contrast, brightness, colour, sharpness
                factor = 0.95 − 0.85·u                        factor ∈ (0.1, 0.95]
    posterize   bits = 7 − min(⌊4·u⌋, 3)                      bits ∈ {4..7}
    solarize    threshold = 256 − round(255·u)                threshold ∈ [1, 256]; pixels
                ≥ threshold are inverted, so 256 leaves the image unchanged
    hue         shift = sign · 0.5·u of the hue circle        shift ∈ [−0.5, 0.5]

The hue direction is an independent fair coin (`sign`), as in the reference code: mapping
u linearly onto [−0.5, 0.5] instead would make u = 0 a half-turn, the strongest shift, and
break "u = 0 is weakest". Ranges are half-open where u ~ U[0,1) makes them so.
No op changes geometry: the strong view must stay pixel-aligned with the weak view.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torchvision.transforms.v2.functional as F
from torch import Tensor

Op = Callable[[Tensor, float, int], Tensor]


def _factor(u: float) -> float:
    # Enhance factors < 1 only ever weaken (towards grey/blur/mean); never > 1.
    return 0.95 - 0.85 * u


def _identity(img: Tensor, u: float, sign: int = 1) -> Tensor:
    return img.clone()


def _autocontrast(img: Tensor, u: float, sign: int = 1) -> Tensor:
    return F.autocontrast(img)


def _equalize(img: Tensor, u: float, sign: int = 1) -> Tensor:
    return F.equalize(img)


def _invert(img: Tensor, u: float, sign: int = 1) -> Tensor:
    return F.invert(img)


def _blur(img: Tensor, u: float, sign: int = 1) -> Tensor:
    sigma = 0.1 + 1.9 * u
    # ±3σ covers the kernel's mass; cap it so reflect padding stays valid on small crops.
    k = 2 * math.ceil(3 * sigma) + 1
    limit = min(img.shape[-2:])
    k = min(k, limit if limit % 2 else limit - 1)
    return F.gaussian_blur(img, [k, k], [sigma, sigma])


def _contrast(img: Tensor, u: float, sign: int = 1) -> Tensor:
    return F.adjust_contrast(img, _factor(u))


def _brightness(img: Tensor, u: float, sign: int = 1) -> Tensor:
    return F.adjust_brightness(img, _factor(u))


def _colour(img: Tensor, u: float, sign: int = 1) -> Tensor:
    return F.adjust_saturation(img, _factor(u))


def _sharpness(img: Tensor, u: float, sign: int = 1) -> Tensor:
    return F.adjust_sharpness(img, _factor(u))


def _posterize(img: Tensor, u: float, sign: int = 1) -> Tensor:
    return F.posterize(img, 7 - min(math.floor(4 * u), 3))


def _solarize(img: Tensor, u: float, sign: int = 1) -> Tensor:
    threshold = 256 - round(255 * u)
    if threshold > 255:
        # torchvision rejects a threshold above the dtype max; no uint8 pixel reaches 256.
        return img.clone()
    return F.solarize(img, threshold)


def _hue(img: Tensor, u: float, sign: int = 1) -> Tensor:
    return F.adjust_hue(img, (1 if sign >= 0 else -1) * 0.5 * u)


OPS: dict[str, Op] = {
    "identity": _identity,
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "invert": _invert,
    "blur": _blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "colour": _colour,
    "sharpness": _sharpness,
    "posterize": _posterize,
    "solarize": _solarize,
    "hue": _hue,
}
OP_NAMES: tuple[str, ...] = tuple(OPS)


def strong_view(
    weak: Tensor,
    k: int,
    generator: torch.Generator,
    magnitude_scale: Tensor | None = None,
) -> Tensor:
    """Strong view of a uint8 batch [B,3,H,W]: per image, k ops drawn uniformly with replacement.

    Each op gets its own u ~ U[0,1) (multiplied by magnitude_scale[i], clamped to [0,1], when
    given: the paper's hardness-scaled magnitude) and a hue direction coin. All draws come from
    `generator` (a CPU generator, so results do not depend on the device) and their number is
    fixed by (B, k), so the stream stays in step whatever ops are drawn. Returns a new tensor on
    weak's device; `weak` is not modified.
    """
    if weak.dtype != torch.uint8 or weak.ndim != 4 or weak.shape[1] != 3:
        raise ValueError(f"weak must be uint8 [B,3,H,W], got {weak.dtype} {tuple(weak.shape)}")
    if k < 0:
        raise ValueError(f"k={k} must be >= 0")
    b = weak.shape[0]
    ops = torch.randint(len(OP_NAMES), (b, k), generator=generator)
    mags = torch.rand((b, k), generator=generator, dtype=torch.float64)
    signs = torch.randint(2, (b, k), generator=generator) * 2 - 1
    if magnitude_scale is not None:
        scale = magnitude_scale.detach().to("cpu", torch.float64).reshape(-1)
        if scale.numel() != b:
            raise ValueError(f"magnitude_scale has {scale.numel()} values for batch size {b}")
        mags = mags * scale.clamp(0.0, 1.0)[:, None]
    out = []
    for i in range(b):
        img = weak[i]
        for j in range(k):
            img = OPS[OP_NAMES[int(ops[i, j])]](img, float(mags[i, j]), int(signs[i, j]))
        out.append(img)
    if not out:
        return weak.clone()
    return torch.stack(out)  # stack copies, so k = 0 still returns a fresh tensor
