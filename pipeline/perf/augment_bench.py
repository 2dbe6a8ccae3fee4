"""Strong-augmentation throughput at the paper's crop: ours against the authors' way.

Ours (`imas.intensity.strong_view`): torchvision ops on uint8 tensors, per image, in the
training process on the training device, drawn from one seeded generator. The authors': PIL ops
per image inside DataLoader workers (`pipeline.perf.pil_ops`). Both get the same images and k.
"""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np
import torch
from PIL import Image

from imas.intensity import OP_NAMES, strong_view
from pipeline.perf.pil_ops import pil_strong_view


class _PilStrong(torch.utils.data.Dataset):
    """Each item: one image's strong view made with PIL, as a uint8 tensor (what a loader hands
    to the training loop)."""

    def __init__(self, images: np.ndarray, k: int, length: int, seed: int) -> None:
        self.images, self.k, self.length, self.seed = images, k, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = random.Random(self.seed * 1_000_003 + index)
        img = Image.fromarray(self.images[index % len(self.images)])
        out = pil_strong_view(img, self.k, OP_NAMES, rng)
        return torch.from_numpy(np.array(out)).permute(2, 0, 1)


def _images(count: int, side: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth random fields, not noise: blur, equalize and autocontrast cost what they cost on
    # photographs only if the histogram is not flat.
    coarse = rng.integers(0, 256, (count, side // 16 + 1, side // 16 + 1, 3), dtype=np.uint8)
    return np.stack(
        [
            np.asarray(Image.fromarray(c).resize((side, side), Image.Resampling.BILINEAR))
            for c in coarse
        ]
    )


def bench_augment(
    side: int, batch: int, batches: int, k: int, workers: int, seed: int = 0
) -> dict[str, Any]:
    """Images per second of both ways over `batches` batches of `batch` images."""
    images = _images(batch, side, seed)
    n = batch * batches

    weak = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    generator = torch.Generator().manual_seed(seed)
    strong_view(weak, k, generator)  # warm-up: first calls compile kernels and fault pages
    start = time.perf_counter()
    for _ in range(batches):
        strong_view(weak, k, generator)
    ours = time.perf_counter() - start

    loader = torch.utils.data.DataLoader(
        _PilStrong(images, k, n, seed), batch_size=batch, num_workers=workers
    )
    start = time.perf_counter()
    for _ in loader:
        pass
    authors = time.perf_counter() - start  # includes starting the workers, as each epoch does
    return {
        "side": side,
        "batch": batch,
        "images": n,
        "k": k,
        "ours_images_per_s": round(n / ours, 1),
        "authors_images_per_s": round(n / authors, 1),
        "authors_workers": workers,
        "ours_threads": torch.get_num_threads(),
    }
