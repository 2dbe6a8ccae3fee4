"""Weak geometric transform (shared by image and mask) and normalisation (ImageNet's statistics
unless a dataset brings its own).

The weak transform is the only source of geometry in training: the strong view is later made
from the weak view by intensity ops alone (SPEC §1, §3), so image, mask and both views stay
pixel-aligned. All randomness comes from torch's global RNG, so a seeded DataLoader with
num_workers=0 (or seeded workers) reproduces the same crops.
"""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as F
from torch import Tensor
from torchvision.transforms import InterpolationMode

from imas.config import AugConfig
from imas.data.catalogue import IGNORE_INDEX
from imas.data.normalization import IMAGENET, IMAGENET_MEAN, Normalization


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand(()).item()


def pad_fill(mean: tuple[float, float, float] = IMAGENET_MEAN) -> tuple[int, int, int]:
    """The uint8 colour that padding takes: the normalisation mean × 255 per channel, truncated
    as the authors' `Crop` does (cv2 pads a float image with mean·255, `np.uint8` truncates):
    (123, 116, 103) for ImageNet's mean. Normalised, it is ≈ 0, so padding adds no signal."""
    return (int(mean[0] * 255), int(mean[1] * 255), int(mean[2] * 255))


def weak_transform(
    image: Tensor,
    mask: Tensor | None,
    aug: AugConfig,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
) -> tuple[Tensor, Tensor | None]:
    """Random rescale, optional horizontal flip, pad to the crop size, random crop, in the
    authors' order (SPEC §6).

    image: uint8 [3,H,W]; mask: int64 [H,W] or None (unlabeled images). Returns a uint8
    [3,c,c] image and an int64 [c,c] mask (or None), c = aug.crop. The image is resized
    bilinearly with antialiasing; the mask with NEAREST_EXACT, whose pixel-centre convention
    matches bilinear with align_corners=False (plain NEAREST drifts by up to a pixel, which
    would misalign thin digit strokes). Padding goes on the bottom/right, after the flip, as in
    the reference code: the image takes the colour of the normalisation `mean` (`pad_fill`),
    the mask 255 (ignored).
    """
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be uint8 [3,H,W], got {image.dtype} {tuple(image.shape)}")
    h, w = image.shape[-2:]
    if mask is not None and tuple(mask.shape) != (h, w):
        raise ValueError(f"mask shape {tuple(mask.shape)} != image size {(h, w)}")
    crop = aug.crop

    s = _uniform(*aug.scale)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    if (nh, nw) != (h, w):
        image = F.resize(image, [nh, nw], interpolation=InterpolationMode.BILINEAR, antialias=True)
        if mask is not None:
            # uint8 round-trip: the resize kernels take uint8, and labels are ≤ 255.
            m8 = mask.to(torch.uint8)[None]
            mask = F.resize(m8, [nh, nw], interpolation=InterpolationMode.NEAREST_EXACT)[0]
            mask = mask.to(torch.int64)

    if aug.hflip and torch.rand(()).item() < 0.5:
        image = image.flip(-1)
        if mask is not None:
            mask = mask.flip(-1)

    ph, pw = max(0, crop - nh), max(0, crop - nw)
    if ph or pw:
        image = F.pad(image, [0, 0, pw, ph], fill=list(pad_fill(mean)))
        if mask is not None:
            mask = torch.nn.functional.pad(mask, (0, pw, 0, ph), value=IGNORE_INDEX)
        nh, nw = nh + ph, nw + pw

    top = int(torch.randint(0, nh - crop + 1, ()).item())
    left = int(torch.randint(0, nw - crop + 1, ()).item())
    image = image[:, top : top + crop, left : left + crop]
    if mask is not None:
        mask = mask[top : top + crop, left : left + crop]
    # Slices are views into a possibly cached full image; copy so callers may write in place.
    return image.contiguous().clone(), None if mask is None else mask.contiguous().clone()


def _stats(x: Tensor, norm: Normalization) -> tuple[Tensor, Tensor]:
    mean = torch.tensor(norm.mean, device=x.device, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(norm.std, device=x.device, dtype=torch.float32).view(3, 1, 1)
    return mean, std


def normalize(x: Tensor, norm: Normalization = IMAGENET) -> Tensor:
    """uint8 image(s) [3,H,W] or [B,3,H,W] → float32 normalised by `norm`, on x's device.

    The pretrained backbones expect ImageNet's statistics; the tiny backbone uses them too so
    one input convention serves all models. A custom dataset may bring its own (`norm`).
    """
    if x.dtype != torch.uint8:
        raise ValueError(f"normalize expects uint8, got {x.dtype}")
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"normalize expects [3,H,W] or [B,3,H,W], got {tuple(x.shape)}")
    mean, std = _stats(x, norm)
    return (x.to(torch.float32) / 255.0 - mean) / std


def denormalize(x: Tensor, norm: Normalization = IMAGENET) -> Tensor:
    """Inverse of `normalize` as float in [0,1] (clamped), for figures."""
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"denormalize expects [3,H,W] or [B,3,H,W], got {tuple(x.shape)}")
    mean, std = _stats(x, norm)
    return (x.to(torch.float32) * std + mean).clamp(0.0, 1.0)
