"""The garment-scene dataset in VOC layout (issue 17's built-in benchmark, not yet the default):
train (VOC's train_aug: 10,582 scenes), val (1,449), tune (every choice of ours is made on it)
and test (scenes of Fashion-MNIST's own test glyphs, never used for any choice).

The train glyphs are cut into disjoint pools first (`fashion_mnist.glyph_pools`): one per scene
split and the rest for pretraining the encoder, whose glyph indices go to `pretrain.txt`, so no
garment is seen twice anywhere. Every scene is rendered by `garments.render_scene`, a pure
function of (seed, split, index), and the tree is renamed into place only once it is complete.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from imas.data.catalogue import GARMENT_CLASSES, IGNORE_INDEX
from imas.data.layout import voc_palette
from imas.data.splits import write_list
from pipeline.acquire import fashion_mnist as fm
from pipeline.acquire.embedded import load_photos, replace_tree
from pipeline.acquire.garments import SceneSpec, plan, render_scene

SPLITS = ("train", "val", "tune", "test")
# Glyphs set aside per scene, × the most garments a scene draws: `plan` adds a glyph to thin
# ones, and a pool that runs out is an error, so leave room.
_POOL_MARGIN = 1.25


def pool_sizes(counts: dict[str, int], spec: SceneSpec) -> dict[str, int]:
    """Glyphs reserved for each scene split."""
    return {s: math.ceil(counts[s] * spec.objects[1] * _POOL_MARGIN) for s in SPLITS}


def _check(counts: dict[str, int], seed: int) -> None:
    if set(counts) != set(SPLITS) or any(n < 1 for n in counts.values()):
        raise ValueError(f"counts={counts}: need a positive count for each of {list(SPLITS)}")
    if seed < 0:
        raise ValueError(f"seed={seed} must be >= 0")


def generate(
    root: Path | str,
    files: dict[str, Path],
    spec: SceneSpec,
    counts: dict[str, int],
    seed: int,
    *,
    fine: int | None = None,
    glyph_counts: dict[str, int] = fm.COUNTS,
    progress: bool = False,
) -> dict:
    """Write the dataset to `root` and return its summary (per split: scenes, glyphs, measured
    foreground and ignore shares, class pixel shares; the pretraining glyphs' count).

    Layout: JPEGImages/<split>_<i>.jpg, SegmentationClass/<split>_<i>.png (index PNG, VOC
    palette; 0 background, 1–10 the Fashion-MNIST classes, 255 ignore),
    ImageSets/Segmentation/{train_aug,train,val,tune,test}.txt, pretrain.txt (train-file glyph
    indices), classes.json. As VOC's lists: train_aug.txt holds every train scene and train.txt
    its first `fine` (default: all), the pool labels are drawn from. `files` are
    `fashion_mnist.locate`'s; `glyph_counts` lets tests use small files.
    """
    _check(counts, seed)
    fine = counts["train"] if fine is None else fine
    if not 1 <= fine <= counts["train"]:
        raise ValueError(f"fine={fine} must be in 1..{counts['train']} (the train scenes)")
    train_glyphs, train_labels = fm.load(files, "train", glyph_counts)
    test_glyphs, test_labels = fm.load(files, "test", glyph_counts)
    sizes = pool_sizes(counts, spec)
    scene_pools = {s: sizes[s] for s in ("train", "val", "tune")}
    rest = len(train_labels) - sum(scene_pools.values())
    if rest < 0:
        raise ValueError(
            f"the train file's {len(train_labels)} glyphs cannot fill pools of {scene_pools}"
        )
    pools = fm.glyph_pools(train_labels, {**scene_pools, "pretrain": rest}, seed)
    pools["test"] = fm.glyph_pools(test_labels, {"test": sizes["test"]}, seed)["test"]
    source = {"test": (test_glyphs, test_labels)}

    def build(tmp: Path) -> dict:
        photos = load_photos()
        (tmp / "JPEGImages").mkdir(parents=True)
        (tmp / "SegmentationClass").mkdir()
        (tmp / "ImageSets" / "Segmentation").mkdir(parents=True)
        palette = voc_palette()
        summary: dict = {"seed": seed, "size": spec.size, "splits": {}}
        with tqdm(total=sum(counts.values()), disable=not progress, desc="garment scenes") as bar:
            for split in SPLITS:
                glyphs, labels = source.get(split, (train_glyphs, train_labels))
                scenes = plan(counts[split], pools[split], glyphs, spec, seed, split)
                ids, shares, rims = [], [], []
                pixels = np.zeros(256, dtype=np.int64)
                for i, glyph_ids in enumerate(scenes):
                    scene = render_scene(glyph_ids, glyphs, labels, photos, spec, seed, split, i)
                    sid = f"{split}_{i:05d}"
                    # 4:4:4 chroma keeps the garments' edges where the mask has them.
                    Image.fromarray(scene.image).save(
                        tmp / "JPEGImages" / f"{sid}.jpg", quality=95, subsampling=0
                    )
                    mask = Image.fromarray(scene.mask)
                    mask.putpalette(palette)
                    mask.save(tmp / "SegmentationClass" / f"{sid}.png")
                    pixels += np.bincount(scene.mask.ravel(), minlength=256)
                    rims.append(float((scene.mask == IGNORE_INDEX).mean()))
                    shares.append(float(((scene.mask != 0) & (scene.mask != IGNORE_INDEX)).mean()))
                    ids.append(sid)
                    bar.update(1)
                sets = tmp / "ImageSets" / "Segmentation"
                if split == "train":
                    write_list(sets / "train_aug.txt", ids)
                    ids = ids[:fine]
                write_list(sets / f"{split}.txt", ids)
                total = int(pixels.sum())
                summary["splits"][split] = {
                    "scenes": len(shares),
                    "glyphs": sum(len(g) for g in scenes),
                    "foreground": [min(shares), float(np.mean(shares)), max(shares)],
                    "ignore": [float(np.mean(rims)), max(rims)],
                    "class_pixels": [int(c) / total for c in pixels[: len(GARMENT_CLASSES)]],
                }
        write_list(tmp / "pretrain.txt", [str(g) for g in sorted(pools["pretrain"].tolist())])
        summary["pretrain_glyphs"] = len(pools["pretrain"])
        summary["fine_scenes"] = fine
        names = list(GARMENT_CLASSES)
        (tmp / "classes.json").write_text(json.dumps(names) + "\n", encoding="utf-8")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return summary

    return replace_tree(root, build)
