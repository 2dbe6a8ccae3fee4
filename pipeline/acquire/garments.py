"""Scenes of Fashion-MNIST garments on the bundled CC0 photos: VOC-like objects for the coming
built-in benchmark (issue 17), large and blob-like where the digit scenes were thin strokes.

A scene holds one or more garments whose glyphs are used by no other scene: each split renders
from its own pool (`fashion_mnist.glyph_pools`), and `plan` hands every scene of the split its
own consecutive glyphs. Garments are filled silhouettes (holes in the glyph closed), shaded by
the glyph's own grey levels in a colour that contrasts with the photo, may overlap (the later
one occludes) and may be cut by the frame. Their sizes are scaled until the scene's foreground
lands in the configured range, measured on the rendered mask; the anti-aliased rim is ignore
(255), as VOC's object outlines are. Every scene is a pure function of (seed, split, index).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from scipy import ndimage

if TYPE_CHECKING:  # torch loads only when crops are rendered: scene generation needs none
    import torch

from imas.data.catalogue import IGNORE_INDEX
from pipeline.acquire.embedded import background

_SPLIT_CODE = {"pretrain": 0, "train": 1, "val": 2, "tune": 3, "test": 4}
_GLYPH_ON = 8  # glyph pixels at or above this grey level are garment (Fashion-MNIST's 0 = none)
_FG_ALPHA, _RIM_ALPHA = 0.5, 0.25  # upscaled silhouette: ≥ 0.5 garment, [0.25, 0.5) ignore
_MIN_CONTRAST = 150.0  # RGB distance between the garment colour and the photo under it
_SCALE_ROUNDS = 12
_MAX_SIDE = 1.5  # × scene size: a larger garment would show the frame only a part of itself
_FILL_MARGIN = 1.5  # plan: silhouettes must cover 1.5 × the minimum foreground at full size
_MAX_IGNORE = 0.05  # share of ignore (rim) pixels a scene may have; VOC's outlines take ~5 %
_ATTEMPTS = 4  # placements tried before a scene is given up


@dataclass(frozen=True)
class SceneSpec:
    """What a scene looks like: side in pixels, garments per scene, foreground share."""

    size: int
    objects: tuple[int, int]  # min, max garments per scene
    foreground: tuple[float, float]  # min, max share of garment pixels (ignore excluded)

    def __post_init__(self) -> None:
        lo, hi = self.objects
        if self.size < 16 or not 1 <= lo <= hi:
            raise ValueError(f"need size >= 16 and 1 <= objects min <= max, got {self}")
        if not 0.0 < self.foreground[0] <= self.foreground[1] < 1.0:
            raise ValueError(f"foreground={self.foreground}: need 0 < min <= max < 1")


@dataclass
class Scene:
    image: np.ndarray  # uint8 [H, W, 3]
    mask: np.ndarray  # uint8 [H, W]: 0 background, 1 + Fashion-MNIST class, 255 ignore
    garments: list[dict] = field(default_factory=list)  # glyph, cls, colour, centre, side


def plan(
    n_scenes: int, pool: np.ndarray, glyphs: np.ndarray, spec: SceneSpec, seed: int, split: str
) -> list[list[int]]:
    """The glyphs of each of `n_scenes` scenes, consecutive glyphs of `pool`, so no glyph serves
    twice. A scene takes a garment count drawn from `spec.objects`, and then more glyphs while
    their silhouettes together cover less than `_FILL_MARGIN` × the minimum foreground at the
    scene's size (a lone strappy sandal cannot fill a quarter of the frame however large it is
    drawn). Raises ValueError naming the split when the pool runs out."""
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], 2**31])
    need = spec.foreground[0] * _FILL_MARGIN
    scenes: list[list[int]] = []
    at = 0
    for _ in range(n_scenes):
        k = int(rng.integers(spec.objects[0], spec.objects[1] + 1))
        ids = pool[at : at + k].tolist()
        if len(ids) < k:
            raise ValueError(
                f"split {split!r}: its pool of {len(pool)} glyphs ran out after {len(scenes)} of "
                f"{n_scenes} scenes"
            )
        covered = sum(fill(glyphs[g]) for g in ids)
        while covered < need and at + len(ids) < len(pool):
            ids.append(int(pool[at + len(ids)]))
            covered += fill(glyphs[ids[-1]])
        scenes.append(ids)
        at += len(ids)
    return scenes


def fill(glyph: np.ndarray) -> float:
    """Share of the glyph's 28×28 box its silhouette covers (0.1 for the thinnest sandals, 0.6
    for pullovers)."""
    return float(silhouette(glyph).mean())


def silhouette(glyph: np.ndarray) -> np.ndarray:
    """The garment's filled shape in its 28×28 glyph (float 0/1): pixels ≥ `_GLYPH_ON` with the
    holes that dark prints leave inside closed."""
    return ndimage.binary_fill_holes(glyph >= _GLYPH_ON).astype(np.float32)


def _resized(a: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(a).resize((side, side), Image.Resampling.BILINEAR))


def paste_garment(
    img: np.ndarray, mask: np.ndarray, glyph: np.ndarray, cls: int, colour: np.ndarray,
    centre: tuple[float, float], side: int, shape: np.ndarray | None = None,
) -> None:  # fmt: skip
    """Composite one garment of `side` pixels centred at `centre`, cut by the frame; `shape` is
    the glyph's `silhouette` when the caller already has it."""
    size = mask.shape[0]
    shape = silhouette(glyph) if shape is None else shape
    alpha = np.clip(_resized(shape, side), 0.0, 1.0)
    shade = _resized(glyph.astype(np.float32) / 255.0, side)
    top, left = round(centre[0] - side / 2), round(centre[1] - side / 2)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + side, size), min(left + side, size)
    if y1 <= y0 or x1 <= x0:
        return
    a = alpha[y0 - top : y1 - top, x0 - left : x1 - left]
    s = shade[y0 - top : y1 - top, x0 - left : x1 - left]
    # The glyph's grey levels keep the garment's texture; 0.4 keeps dark prints visible.
    ink = colour * (0.4 + 0.6 * s)[..., None]
    region = img[y0:y1, x0:x1]
    region[...] = region * (1.0 - a[..., None]) + ink * a[..., None]
    lab = mask[y0:y1, x0:x1]
    lab[a >= _FG_ALPHA] = cls
    lab[(a >= _RIM_ALPHA) & (a < _FG_ALPHA)] = IGNORE_INDEX


def contrast_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """The first of 32 random colours at least `_MIN_CONTRAST` from `under` (else the farthest)."""
    cand = rng.integers(0, 256, size=(32, 3)).astype(np.float32)
    dist = np.linalg.norm(cand - under, axis=1)
    ok = np.flatnonzero(dist >= _MIN_CONTRAST)
    return cand[ok[0] if ok.size else int(np.argmax(dist))]


def render_scene(
    glyph_ids: list[int],
    glyphs: np.ndarray,
    labels: np.ndarray,
    photos: list[np.ndarray],
    spec: SceneSpec,
    seed: int,
    split: str,
    index: int,
) -> Scene:
    """Render one scene of the garments `glyph_ids` (from `plan`).

    Sides start where each garment would cover an equal part of a foreground share drawn
    uniformly from `spec.foreground`, then all sides are scaled together (at most
    `_SCALE_ROUNDS` times, never beyond `_MAX_SIDE` × the scene) until the measured share of
    garment pixels is inside the range; a placement whose ignore rim exceeds `_MAX_IGNORE` is
    drawn again. Raises RuntimeError naming the scene after `_ATTEMPTS` placements.
    """
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], index])
    size = spec.size
    base = background(rng, photos[int(rng.integers(len(photos)))], size)
    # Once per garment, not per paste: every rescaling round pastes the same shapes.
    shapes = [silhouette(glyphs[g]) for g in glyph_ids]
    fills = [max(float(shape.mean()), 0.05) for shape in shapes]
    lo, hi = spec.foreground
    share = ignore = 0.0
    for _attempt in range(_ATTEMPTS):
        target = rng.uniform(lo, hi)
        centres = [tuple(rng.uniform(0.2 * size, 0.8 * size, size=2)) for _ in glyph_ids]
        sides = [size * np.sqrt(target / len(glyph_ids) / f) for f in fills]
        for _ in range(_SCALE_ROUNDS):
            sides = [min(s, _MAX_SIDE * size) for s in sides]
            img, mask, drawn = _compose(base, glyph_ids, shapes, glyphs, labels, centres, sides,
                                        seed, split, index)  # fmt: skip
            share = float(((mask != 0) & (mask != IGNORE_INDEX)).mean())
            ignore = float((mask == IGNORE_INDEX).mean())
            if lo <= share <= hi:
                break
            # Area grows with the square of the side; aim at the middle of the range.
            factor = float(np.clip(np.sqrt((lo + hi) / 2 / max(share, 1e-3)), 0.5, 2.0))
            if factor > 1 and all(s >= _MAX_SIDE * size for s in sides):
                break  # as large as they may be: try another placement
            sides = [s * factor for s in sides]
        if lo <= share <= hi and ignore <= _MAX_IGNORE:
            image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
            return Scene(image=image, mask=mask, garments=drawn)
    raise RuntimeError(
        f"{split} scene {index}: foreground {share:.3f} (range {spec.foreground}), ignore "
        f"{ignore:.3f} (at most {_MAX_IGNORE}) after {_ATTEMPTS} placements"
    )


def _compose(
    base: np.ndarray, glyph_ids: list[int], shapes: list[np.ndarray], glyphs: np.ndarray,
    labels: np.ndarray,
    centres: list[tuple[float, float]], sides: list[float], seed: int, split: str, index: int,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:  # fmt: skip
    size = base.shape[0]
    img, mask = base.copy(), np.zeros((size, size), dtype=np.uint8)
    drawn = []
    for g, shape, centre, side in zip(glyph_ids, shapes, centres, sides, strict=True):
        side_px = max(4, round(side))
        c0 = int(np.clip(round(centre[0]), 0, size - 1))
        c1 = int(np.clip(round(centre[1]), 0, size - 1))
        # A colour stream per (scene, glyph), the same in every rescaling round; the colour can
        # still change between rounds when an earlier garment now covers this one's centre.
        colour = contrast_colour(
            np.random.default_rng([seed, _SPLIT_CODE[split], index, g]), img[c0, c1]
        )
        paste_garment(img, mask, glyphs[g], 1 + int(labels[g]), colour, centre, side_px, shape)
        drawn.append({"glyph": g, "cls": 1 + int(labels[g]), "colour": colour.tolist(),
                      "centre": centre, "side": side_px})  # fmt: skip
    return img, mask, drawn


def render_crops(
    glyph_ids: Sequence[int],
    glyphs: np.ndarray,
    labels: np.ndarray,
    photos: list[np.ndarray],
    size: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images `[N, 3, size, size]` of one garment each and their classes `[N]` (0..9):
    the pretraining set of the `pretrain` stage (imas/pretrain.py).

    Image i is a pure function of (seed, glyph): a photo crop, the garment at a side of 55–90 %
    of the image, centred within the middle fifth, in a colour that contrasts with the photo.
    """
    import torch

    images = np.empty((len(glyph_ids), 3, size, size), dtype=np.uint8)
    for i, g in enumerate(glyph_ids):
        rng = np.random.default_rng([seed, 7, int(g)])
        img = background(rng, photos[int(rng.integers(len(photos)))], size)
        side = round(size * rng.uniform(0.55, 0.9))
        centre = tuple(rng.uniform(0.4 * size, 0.6 * size, size=2))
        colour = contrast_colour(rng, img[size // 2, size // 2])
        mask = np.zeros((size, size), dtype=np.uint8)
        paste_garment(img, mask, glyphs[g], 1, colour, centre, side)
        images[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8).transpose(2, 0, 1)
    return torch.from_numpy(images), torch.from_numpy(labels[list(glyph_ids)].astype(np.int64))
