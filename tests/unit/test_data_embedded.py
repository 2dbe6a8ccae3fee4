"""Built-in dataset: layout, determinism, train/val source disjointness, label semantics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imas.config import EmbeddedDataConfig
from imas.data.splits import read_list
from pipeline.acquire.embedded import generate, load_assets, mnist_source_split, render_scene


def _cfg(**kw) -> EmbeddedDataConfig:
    base = dict(
        train_scenes=20, val_scenes=10, size=32, digits=tuple(range(10)), digits_per_scene=(1, 3),
        digit_size=(12, 24), ignore_border=True, stroke=0,
    )  # fmt: skip
    base.update(kw)
    return EmbeddedDataConfig(**base)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("emb") / "embedded"
    return root, generate(root, _cfg(), seed=0)


def test_layout_ids_and_counts(built) -> None:
    root, summary = built
    train = read_list(root / "ImageSets/Segmentation/train.txt")
    val = read_list(root / "ImageSets/Segmentation/val.txt")
    assert train == [f"train_{i:05d}" for i in range(20)]
    assert val == [f"val_{i:05d}" for i in range(10)]
    assert not (root / "ImageSets/Segmentation/train.txt").read_bytes().endswith(b"\n")
    assert json.loads((root / "classes.json").read_text()) == [
        "background",
        *(f"digit {d}" for d in range(10)),
    ]
    assert sorted(p.stem for p in (root / "JPEGImages").iterdir()) == train + val
    assert sorted(p.stem for p in (root / "SegmentationClass").iterdir()) == train + val
    assert summary["train_scenes"] == 20 and summary["val_scenes"] == 10
    assert summary["num_classes"] == 11
    freq = summary["class_pixel_freq"]["train"]
    assert abs(sum(freq.values()) - 1.0) < 1e-9 and freq["background"] > 0.5
    assert not list(root.parent.glob("*.tmp-*")) and not list(root.parent.glob("*.old-*"))


def test_files_are_voc_like(built) -> None:
    root, _ = built
    img = Image.open(root / "JPEGImages/train_00003.jpg")
    mask = Image.open(root / "SegmentationClass/train_00003.png")
    assert img.mode == "RGB" and img.size == (32, 32)
    assert mask.mode == "P" and mask.size == (32, 32)
    assert mask.getpalette()[:6] == [0, 0, 0, 128, 0, 0]  # VOC palette
    values = set()
    for p in (root / "SegmentationClass").iterdir():
        values |= set(np.unique(np.asarray(Image.open(p))).tolist())
    assert values <= set(range(11)) | {255}
    assert 255 in values and len(values - {0, 255}) >= 3


def test_deterministic_bytes_and_seed_changes_output(built, tmp_path) -> None:
    root, summary = built
    again = tmp_path / "again"
    assert generate(again, _cfg(), seed=0) == summary
    assert _files(again) == _files(root)
    other = tmp_path / "other"
    generate(other, _cfg(), seed=1)
    a, b = _files(root), _files(other)
    assert a.keys() == b.keys()
    assert a["JPEGImages/train_00000.jpg"] != b["JPEGImages/train_00000.jpg"]
    assert a["classes.json"] == b["classes.json"]


def test_regenerate_replaces_existing_root(tmp_path) -> None:
    root = tmp_path / "d"
    generate(root, _cfg(train_scenes=3, val_scenes=2), seed=0)
    (root / "stale.txt").write_text("x")
    generate(root, _cfg(train_scenes=2, val_scenes=1), seed=0)
    assert not (root / "stale.txt").exists()
    assert len(list((root / "JPEGImages").iterdir())) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_failure_leaves_no_temp_and_keeps_old_root(tmp_path, monkeypatch) -> None:
    import pipeline.acquire.embedded as emb

    root = tmp_path / "d"
    generate(root, _cfg(train_scenes=2, val_scenes=1), seed=0)
    before = _files(root)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(emb, "write_list", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        generate(root, _cfg(train_scenes=4, val_scenes=1), seed=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    assert _files(root) == before


def test_train_and_val_use_disjoint_mnist_sources() -> None:
    assets = load_assets()
    pools = mnist_source_split(assets.labels)
    assert set(pools["train"].tolist()).isdisjoint(pools["val"].tolist())
    assert len(pools["train"]) == 4000 and len(pools["val"]) == 1000
    assert np.all(np.bincount(assets.labels[pools["val"]]) == 100)  # stratified per class
    cfg = _cfg(train_scenes=60, val_scenes=30)
    used = {
        split: {d["source"] for i in range(n) for d in render_scene(cfg, 0, split, i).digits}
        for split, n in (("train", 60), ("val", 30))
    }
    assert used["train"] <= set(pools["train"].tolist())
    assert used["val"] <= set(pools["val"].tolist())
    assert used["train"] and used["val"]


def test_scene_is_stable_when_pool_grows() -> None:
    a = render_scene(_cfg(train_scenes=5), 0, "train", 4)
    b = render_scene(_cfg(train_scenes=500), 0, "train", 4)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)


@pytest.mark.parametrize("border", [True, False])
def test_ignore_border_switch(tmp_path, border: bool) -> None:
    root = tmp_path / "d"
    generate(root, _cfg(train_scenes=10, val_scenes=2, ignore_border=border), seed=0)
    masks = [np.asarray(Image.open(p)) for p in (root / "SegmentationClass").iterdir()]
    has_ignore = any((m == 255).any() for m in masks)
    assert has_ignore == border
    assert all(set(np.unique(m).tolist()) <= set(range(11)) | {255} for m in masks)


def test_label_pixels_have_digit_colour(built) -> None:
    """With one digit per scene every label>0 pixel is that digit, drawn in its colour."""
    cfg = _cfg(digits_per_scene=(1, 1), digit_size=(20, 28))
    for i in range(10):
        scene = render_scene(cfg, 5, "train", i)
        (digit,) = scene.digits
        fg = scene.mask > 0
        assert fg.any()
        assert set(np.unique(scene.mask[fg]).tolist()) <= {digit["cls"], 255}
        strokes = scene.mask == digit["cls"]
        err = np.abs(scene.image[strokes].astype(float) - np.array(digit["colour"])).mean(axis=1)
        # Intensity ≥ 0.5 blends at least half the digit colour in; most strokes are solid.
        assert np.median(err) < 40
        y, x, s = digit["box"]
        outside = np.ones_like(fg)
        outside[y : y + s, x : x + s] = False
        assert not fg[outside].any()
        assert digit["cls"] == digit["digit"] + 1  # all ten digits: class k + 1 is digit k


def test_digit_subset_maps_to_consecutive_classes() -> None:
    cfg = _cfg(digits=(7, 3))
    assert cfg.class_names == ["background", "digit 7", "digit 3"]
    seen = set()
    for i in range(12):
        for digit in render_scene(cfg, 0, "train", i).digits:
            assert digit["digit"] in (7, 3)
            assert digit["cls"] == (1 if digit["digit"] == 7 else 2)
            seen.add(digit["digit"])
    assert seen == {3, 7}
    with pytest.raises(ValueError, match="distinct"):
        _cfg(digits=(1, 1))


def test_written_image_matches_render(built) -> None:
    root, _ = built
    scene = render_scene(_cfg(), 0, "val", 2)
    assert np.array_equal(
        np.asarray(Image.open(root / "SegmentationClass/val_00002.png")), scene.mask
    )
    jpg = np.asarray(Image.open(root / "JPEGImages/val_00002.jpg")).astype(int)
    assert np.abs(jpg - scene.image).mean() < 4  # only JPEG loss


def test_bad_config_rejected(tmp_path) -> None:
    with pytest.raises(ValueError, match="digit_size"):
        generate(tmp_path / "x", _cfg(digit_size=(12, 40)), seed=0)
    with pytest.raises(ValueError, match="seed=-1"):
        generate(tmp_path / "x", _cfg(), seed=-1)
    assert not list(tmp_path.iterdir())


def test_stroke_thickens_digits_and_keeps_the_layout() -> None:
    thin, bold = (render_scene(_cfg(stroke=s), 0, "train", 3) for s in (0, 2))
    # Same draws (source, colour, box); only the alpha is dilated, so the label grows.
    assert [d["box"] for d in thin.digits] == [d["box"] for d in bold.digits]
    assert [d["source"] for d in thin.digits] == [d["source"] for d in bold.digits]
    fg_thin = (thin.mask > 0) & (thin.mask != 255)
    fg_bold = (bold.mask > 0) & (bold.mask != 255)
    assert fg_bold.sum() > 1.5 * fg_thin.sum()
    # With one digit, every thin stroke pixel stays that digit when bolded.
    single = _cfg(digits_per_scene=(1, 1))
    a, b = (render_scene(single.model_copy(update={"stroke": s}), 0, "train", 5) for s in (0, 1))
    assert np.all(b.mask[a.mask == a.digits[0]["cls"]] == a.digits[0]["cls"])
    with pytest.raises(ValueError, match="stroke"):
        _cfg(stroke=5)
