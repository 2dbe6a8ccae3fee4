"""A small custom dataset folder, as a user would bring one: the README's worked example.

`write_example(root)` writes 48 grayscale 32×32 images of a bright blob on a noisy background
(PNG, with a few JPEG and TIFF files among them), index-PNG masks (0 background, 1 blob) for
16 of them only, and `classes.txt`; the other 32 are unlabeled and have no mask. Deterministic:
the same bytes for the same arguments.

Run as a script to write it for the README's commands:
`python tests/support/custom_data.py my_data`. `make_folder` writes tinier ones (8×8) for the
unit tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
IMAGES = 48
MASKED = 16


def blob(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A gray image (uint8 [size, size]) with one bright disc on noise, and its 0/1 mask."""
    yy, xx = np.mgrid[:size, :size]
    radius = rng.uniform(size / 8, size / 4)
    cy, cx = rng.uniform(radius, size - radius, 2)
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2).astype(np.uint8)
    noise = rng.normal(70, 20, (size, size))
    image = np.where(mask == 1, rng.normal(190, 15, (size, size)), noise)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def suffix(index: int) -> str:
    """Mostly PNG; every 12th a JPEG and every 12th (shifted) a TIFF, as mixed folders are."""
    return {5: ".jpg", 11: ".tif"}.get(index % 12, ".png")


def write_example(
    root: Path, images: int = IMAGES, masked: int = MASKED, seed: int = 0
) -> dict[str, list[str]]:
    """Write the folder; return its ids, `masked` (the first `masked` ids, with masks) and
    `unmasked` (the rest)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    ids = [f"img{k:03d}" for k in range(images)]
    for k, i in enumerate(ids):
        image, mask = blob(rng)
        Image.fromarray(image).save(root / "images" / f"{i}{suffix(k)}")
        if k < masked:
            Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    (root / "classes.txt").write_text("background #000000\nblob #FF0000\n", encoding="utf-8")
    return {"masked": ids[:masked], "unmasked": ids[masked:]}


# Tiny folders for the unit tests: 8×8 images, masks with rows of given values.
TINY = 8


def tiny_image(value: int, size: tuple[int, int] = (TINY, TINY)) -> Image.Image:
    """A gray image of noise seeded by `value`; `size` is (width, height)."""
    rng = np.random.default_rng(value)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8))


def tiny_mask(
    size: tuple[int, int] = (TINY, TINY), values: tuple[int, ...] = (0, 1)
) -> Image.Image:
    """A mask whose row k holds values[k] (the rest 0)."""
    arr = np.zeros((size[1], size[0]), np.uint8)
    for k, v in enumerate(values):
        arr[k] = v
    return Image.fromarray(arr)


def make_folder(root: Path, images: int = 8, masked: int = 4) -> list[str]:
    """`images` gray PNGs a0, a1, …; masks (0 and 1) for the first `masked`; two classes."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    ids = [f"a{k}" for k in range(images)]
    for k, i in enumerate(ids):
        tiny_image(k).save(root / "images" / f"{i}.png")
        if k < masked:
            tiny_mask().save(root / "masks" / f"{i}.png")
    (root / "classes.txt").write_text("background\nobject #FF0000\n")
    return ids


def write_lists(root: Path, **lists: list[str]) -> None:
    """labeled.txt, unlabeled.txt, val.txt … in `root`, one id per line."""
    for name, ids in lists.items():
        (root / f"{name}.txt").write_text("\n".join(ids) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/support/custom_data.py FOLDER")
    out = Path(sys.argv[1])
    found = write_example(out)
    print(f"wrote {out}: {IMAGES} images, {len(found['masked'])} with masks, classes.txt")
