"""The per-channel mean and std that turn uint8 images into the network's input, without torch.

ImageNet's statistics are the default for every dataset (the pretrained backbones expect them);
a custom dataset may instead use its own train images' statistics (`channel_stats`), which the
download stage computes once and the training and evaluation stages read back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Normalization:
    """Mean and std per RGB channel, of pixel values scaled to [0, 1]."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(
                f"normalization needs 3 means and 3 stds, got {list(self.mean)}, {list(self.std)}"
            )
        if not all(0.0 <= m <= 1.0 for m in self.mean):
            raise ValueError(f"normalization mean {list(self.mean)} must lie in [0, 1]")
        # A zero std would divide by zero: an image set whose channel never varies.
        if not all(math.isfinite(s) and s > 0.0 for s in self.std):
            raise ValueError(f"normalization std {list(self.std)} must be positive")

    def as_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Any) -> Normalization:
        """From `as_dict`'s form; ValueError naming what is missing or wrong."""
        if not isinstance(data, dict) or not {"mean", "std"} <= data.keys():
            raise ValueError(f"expected a mapping with mean and std, got {data!r}")
        mean, std = data["mean"], data["std"]
        if not all(isinstance(v, list) and len(v) == 3 for v in (mean, std)):
            raise ValueError(f"mean and std must be lists of 3 numbers, got {mean!r}, {std!r}")
        return cls(
            (float(mean[0]), float(mean[1]), float(mean[2])),
            (float(std[0]), float(std[1]), float(std[2])),
        )


IMAGENET = Normalization(IMAGENET_MEAN, IMAGENET_STD)


class ChannelSums:
    """Running sums of uint8 RGB images for `channel_stats`, one image at a time (a dataset
    need not fit in memory). The sums are exact integers, so the result does not depend on
    the order the images come in."""

    def __init__(self) -> None:
        self.total = [0, 0, 0]
        self.squares = [0, 0, 0]
        self.pixels = 0

    def add(self, image: np.ndarray) -> None:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
        flat = image.reshape(-1, 3).astype(np.int64)
        self.pixels += flat.shape[0]
        for c in range(3):
            self.total[c] += int(flat[:, c].sum())
            self.squares[c] += int(np.square(flat[:, c]).sum())

    def result(self) -> Normalization:
        """Mean and population std per channel, of values scaled to [0, 1]; ValueError for no
        pixels or a constant channel."""
        n = self.pixels
        if n == 0:
            raise ValueError("no image pixels to compute a normalization from")
        mean = [t / (255 * n) for t in self.total]
        # Var = E[x²] − E[x]², from the exact sums: (n·Σx² − (Σx)²) / (255·n)².
        pairs = zip(self.total, self.squares, strict=True)
        var = [(n * q - t * t) / (255 * n) ** 2 for t, q in pairs]
        std = [math.sqrt(v) for v in var]
        if not all(s > 0.0 for s in std):
            raise ValueError(f"a channel of the images is constant (std {std}): cannot normalize")
        return Normalization((mean[0], mean[1], mean[2]), (std[0], std[1], std[2]))


def channel_stats(images: Iterable[np.ndarray]) -> Normalization:
    """Mean and (population) std per channel of uint8 RGB images `[H, W, 3]`, over every pixel
    of every image pooled, so a large image weighs more than a small one."""
    sums = ChannelSums()
    for image in images:
        sums.add(image)
    return sums.result()
