"""dataset: custom — the prepared root the download stage writes (RGB images, index masks, the
lists), the conversion of grayscale, palette, alpha and 1-bit files, and the normalisation
statistics (hand-computed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.custom_data import make_folder, tiny_image, tiny_mask, write_lists
from support.params import custom_params

from imas.data.datasets import read_image, read_mask
from imas.data.normalization import IMAGENET, Normalization, channel_stats
from imas.data.transforms import normalize, pad_fill
from pipeline.acquire.custom import prepare_custom
from pipeline.acquire.custom_folder import load_image, load_mask


@pytest.fixture
def src(tmp_path: Path) -> Path:
    make_folder(tmp_path / "src")
    return tmp_path / "src"


# The prepared root.


def test_prepare_converts_and_lists_a_drawn_val(src: Path, tmp_path: Path) -> None:
    (src / "images" / ".DS_Store").write_bytes(b"\0")  # hidden files are not images
    tiny_image(20).convert("RGB").save(src / "images" / "a8.jpg")
    tiny_image(21).save(src / "images" / "a9.tif")
    out = tmp_path / "out"
    summary = prepare_custom(custom_params(src, val=1), out, progress=False)
    sets = out / "ImageSets/Segmentation"
    val = (sets / "val.txt").read_text().split()
    assert len(val) == 1 and val[0] in {"a0", "a1", "a2", "a3"}
    train = [f"a{k}" for k in range(10) if f"a{k}" not in val]
    assert (sets / "train_aug.txt").read_text().split() == train
    assert (sets / "train.txt").read_text().split() == [i for i in train if i < "a4"]
    assert not (sets / "labeled.txt").exists()  # drawn by the split stage
    assert json.loads((out / "classes.json").read_text()) == ["background", "object"]
    assert json.loads((out / "palette.json").read_text())[1] == [255, 0, 0]
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"a{k}.png" for k in range(10)]
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"a{k}.png" for k in range(4)]
    assert summary["train_images"] == 9 and summary["train_masked"] == 3
    # Gray became RGB by replication, pixel for pixel; the TIFF too.
    for name, source in (("a2", "a2.png"), ("a9", "a9.tif")):
        gray = np.asarray(Image.open(src / "images" / source))
        rgb = read_image(out / "images" / f"{name}.png")
        assert all(np.array_equal(rgb[c].numpy(), gray) for c in range(3))
    mask = Image.open(out / "masks" / "a0.png")
    assert mask.mode == "P" and mask.getpalette()[3:6] == [255, 0, 0]
    assert np.array_equal(read_mask(out / "masks/a0.png", 2).numpy(), np.asarray(tiny_mask()))


def test_prepare_keeps_the_folders_lists(src: Path, tmp_path: Path) -> None:
    write_lists(src, labeled=["a2", "a0"], unlabeled=["a7", "a5", "a6"], val=["a3"])
    out = tmp_path / "out"
    prepare_custom(custom_params(src, split="lists", val=None, labeled=2), out, progress=False)
    sets = out / "ImageSets/Segmentation"
    read = {p.stem: p.read_text().split() for p in sets.iterdir()}
    assert read == {
        "labeled": ["a2", "a0"],
        "unlabeled": ["a7", "a5", "a6"],
        "val": ["a3"],
        "train": ["a2", "a0"],
        "train_aug": ["a2", "a0", "a7", "a5", "a6"],
    }
    # Images no list names are left out; masks only for labeled and val ids.
    assert sorted(p.stem for p in (out / "images").iterdir()) == [
        "a0",
        "a2",
        "a3",
        "a5",
        "a6",
        "a7",
    ]
    assert sorted(p.stem for p in (out / "masks").iterdir()) == ["a0", "a2", "a3"]


def test_grayscale_palette_and_alpha_images_become_rgb(tmp_path: Path) -> None:
    gray = np.array([[0, 128], [200, 255]], np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = [10, 20, 30]
    Image.fromarray(rgba).save(tmp_path / "t.png")  # alpha 0 everywhere: dropped, not applied
    pal = Image.fromarray(np.array([[0, 1]], np.uint8))
    pal.putpalette([1, 2, 3, 4, 5, 6])
    pal.save(tmp_path / "p.png")
    assert np.array_equal(load_image(tmp_path / "g.png")[0], np.repeat(gray[..., None], 3, 2))
    assert np.array_equal(load_image(tmp_path / "t.png")[0], rgba[..., :3])
    assert load_image(tmp_path / "p.png")[0].tolist() == [[[1, 2, 3], [4, 5, 6]]]


def test_a_one_bit_mask_holds_classes_0_and_1(tmp_path: Path) -> None:
    bits = np.array([[False, True], [True, True]])
    Image.fromarray(bits).save(tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode == "1"
    mask, problem = load_mask(tmp_path / "m.png", tmp_path / "i.png", (2, 2), 2, tmp_path / "c")
    assert problem is None and mask is not None and mask.tolist() == [[0, 1], [1, 1]]


# Normalisation.


def test_channel_stats_on_a_hand_computed_case() -> None:
    # R: 0, 255 → mean 0.5, std 0.5; G: 0, 51 → 0.1, 0.1; B: 102, 0 → 0.2, 0.2.
    image = np.array([[[0, 0, 102], [255, 51, 0]]], np.uint8)
    stats = channel_stats([image])
    assert stats.mean == pytest.approx((0.5, 0.1, 0.2), abs=1e-15)
    assert stats.std == pytest.approx((0.5, 0.1, 0.2), abs=1e-15)
    # Pixels are pooled over images: gray 0, 255 | 255, 255 → mean 3/4, var 3/4 − 9/16 = 3/16.
    a = np.array([[[0] * 3, [255] * 3]], np.uint8)
    b = np.full((1, 2, 3), 255, np.uint8)
    pooled = channel_stats([a, b])
    assert pooled.mean == (0.75, 0.75, 0.75)
    assert pooled.std == pytest.approx((0.1875**0.5,) * 3, abs=1e-15)
    assert channel_stats([b, a]) == pooled  # exact integer sums: order does not matter
    with pytest.raises(ValueError, match="constant"):
        channel_stats([b])
    with pytest.raises(ValueError, match="no image pixels"):
        channel_stats([])


def test_normalize_with_a_dataset_s_statistics() -> None:
    norm = Normalization((0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    x = np.array([0, 255], np.uint8).reshape(1, 1, 2).repeat(3, 0)
    out = normalize(torch.from_numpy(x), norm)
    assert out[:, 0, :].tolist() == [[-1.0, 1.0], [-1.0, 3.0], [0.0, 1.0]]
    assert pad_fill(norm.mean) == (127, 63, 0)
    assert Normalization.from_dict(json.loads(json.dumps(norm.as_dict()))) == norm
    with pytest.raises(ValueError, match="must be positive"):
        Normalization((0.5, 0.5, 0.5), (0.1, 0.0, 0.1))


def test_prepare_writes_the_computed_or_imagenet_statistics(src: Path, tmp_path: Path) -> None:
    prepare_custom(custom_params(src, val=1), tmp_path / "c", progress=False)
    written = json.loads((tmp_path / "c/normalization.json").read_text())
    train = (tmp_path / "c/ImageSets/Segmentation/train_aug.txt").read_text().split()
    expected = channel_stats(np.asarray(Image.open(tmp_path / f"c/images/{i}.png")) for i in train)
    assert written == {"source": "computed", **expected.as_dict()}
    prepare_custom(custom_params(src, val=1, normalize="imagenet"), tmp_path / "i", progress=False)
    written = json.loads((tmp_path / "i/normalization.json").read_text())
    assert written == {"source": "imagenet", **IMAGENET.as_dict()}
