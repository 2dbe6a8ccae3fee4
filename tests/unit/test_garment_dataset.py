"""The garment-scene dataset writer (issue 17): VOC layout with train/val/tune/test lists, no
glyph in two places (scene splits and the pretraining pool), test scenes from the test file,
the same bytes twice, and nothing left behind by a failing build."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.acquire import fashion_mnist as fm
from pipeline.acquire import garment_dataset as gd
from pipeline.acquire.garments import SceneSpec

SPEC = SceneSpec(size=32, objects=(1, 2), foreground=(0.25, 0.35))
COUNTS = {"train": 6, "val": 3, "tune": 3, "test": 3}
GLYPHS = {"train": 80, "test": 20}


def idx(array: np.ndarray) -> bytes:
    dims = b"".join(d.to_bytes(4, "big") for d in array.shape)
    return bytes([0, 0, 8, array.ndim]) + dims + array.astype(np.uint8).tobytes()


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    """A small Fashion-MNIST: shaded rectangles of every class, train and test files."""
    folder = tmp_path / "fashion"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, (images, labels) in fm.FILES.items():
        n = GLYPHS[split]
        glyphs = np.zeros((n, 28, 28), dtype=np.uint8)
        for i in range(n):
            h, w = rng.integers(14, 24, size=2)
            glyphs[i, 2 : 2 + h, 2 : 2 + w] = rng.integers(40, 255, size=(h, w))
        (folder / images).write_bytes(gzip.compress(idx(glyphs), mtime=0))
        (folder / labels).write_bytes(gzip.compress(idx(np.arange(n) % 10), mtime=0))
    return {name: folder / name for pair in fm.FILES.values() for name in pair}


def test_the_dataset_tree_lists_splits_and_keeps_glyphs_apart(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    root = tmp_path / "garments"
    summary = gd.generate(root, files, SPEC, COUNTS, seed=0, glyph_counts=GLYPHS)
    lists = root / "ImageSets" / "Segmentation"
    for split, n in COUNTS.items():
        ids = (lists / f"{split}.txt").read_text().split("\n")
        assert ids == [f"{split}_{i:05d}" for i in range(n)]
        for sid in ids:
            mask = np.asarray(Image.open(root / "SegmentationClass" / f"{sid}.png"))
            image = Image.open(root / "JPEGImages" / f"{sid}.jpg")
            assert image.size == (32, 32) and mask.shape == (32, 32)
            assert set(np.unique(mask).tolist()) <= {*range(11), 255}
            assert 0.25 <= ((mask != 0) & (mask != 255)).mean() <= 0.35
        stats = summary["splits"][split]
        assert stats["scenes"] == n and stats["foreground"][0] >= 0.25
        assert stats["foreground"][2] <= 0.35 and stats["ignore"][1] <= 0.05
    assert json.loads((root / "classes.json").read_text())[:2] == ["background", "T-shirt/top"]
    # The pretraining pool is every train-file glyph that no scene split reserved.
    pretrain = [int(g) for g in (root / "pretrain.txt").read_text().split("\n")]
    reserved = sum(v for k, v in gd.pool_sizes(COUNTS, SPEC).items() if k != "test")
    assert len(pretrain) == summary["pretrain_glyphs"] == GLYPHS["train"] - reserved
    assert len(set(pretrain)) == len(pretrain)
    assert json.loads((root / "summary.json").read_text()) == summary


def test_same_seed_same_bytes_other_seed_other_scenes(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    def tree(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*.*")}

    a = tmp_path / "a"
    gd.generate(a, files, SPEC, COUNTS, seed=0, glyph_counts=GLYPHS)
    gd.generate(tmp_path / "b", files, SPEC, COUNTS, seed=0, glyph_counts=GLYPHS)
    gd.generate(tmp_path / "c", files, SPEC, COUNTS, seed=1, glyph_counts=GLYPHS)
    assert tree(a) == tree(tmp_path / "b")
    assert tree(a)["JPEGImages/val_00000.jpg"] != tree(tmp_path / "c")["JPEGImages/val_00000.jpg"]


def test_bad_counts_and_too_few_glyphs_fail_before_writing(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    root = tmp_path / "garments"
    with pytest.raises(ValueError, match="need a positive count"):
        gd.generate(root, files, SPEC, {**COUNTS, "tune": 0}, seed=0, glyph_counts=GLYPHS)
    with pytest.raises(ValueError, match="cannot fill pools"):
        gd.generate(root, files, SPEC, {**COUNTS, "train": 40}, seed=0, glyph_counts=GLYPHS)
    assert not root.exists() and list(tmp_path.iterdir()) == [tmp_path / "fashion"]
