"""dataset: custom — the folder checks of the download stage (every problem, named by file), the
conversion to the prepared root, and the statistics that normalise it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from support.params import tiny_custom, tiny_params

from imas.data import DataError
from imas.data.datasets import read_image, read_mask
from imas.data.normalization import IMAGENET, Normalization, channel_stats
from imas.data.transforms import normalize, pad_fill
from pipeline.acquire.custom import prepare_custom
from pipeline.acquire.custom_folder import (
    MAX_SHOWN,
    CustomDataError,
    load_image,
    load_mask,
    read_classes,
)
from pipeline.config.params import Params, ParamsError, load_params

SIZE = 8


def _image(value: int, size: tuple[int, int] = (SIZE, SIZE)) -> Image.Image:
    rng = np.random.default_rng(value)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8))


def _mask(size: tuple[int, int] = (SIZE, SIZE), values: tuple[int, ...] = (0, 1)) -> Image.Image:
    arr = np.zeros((size[1], size[0]), np.uint8)
    for k, v in enumerate(values):
        arr[k] = v
    return Image.fromarray(arr)


def make_folder(root: Path, images: int = 8, masked: int = 4) -> list[str]:
    """`images` gray PNGs a0..; masks (0 and 1) for the first `masked`; two classes."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    ids = [f"a{k}" for k in range(images)]
    for k, i in enumerate(ids):
        _image(k).save(root / "images" / f"{i}.png")
        if k < masked:
            _mask().save(root / "masks" / f"{i}.png")
    (root / "classes.txt").write_text("background\nobject #FF0000\n")
    return ids


def params_for(root: Path, **options: Any) -> Params:
    """Tiny params on folder `root`; one masked image held out as val unless `options` say."""
    options = {"val": 1, **options}
    return Params.model_validate(tiny_custom(tiny_params(), str(root), **options))


def problems(root: Path, out: Path, **options: Any) -> list[str]:
    with pytest.raises(CustomDataError) as err:
        prepare_custom(params_for(root, **options), out, progress=False)
    assert not out.exists()  # nothing written, not even a partial root
    assert not list(out.parent.glob(f".{out.name}.building-*"))
    return err.value.problems


@pytest.fixture
def src(tmp_path: Path) -> Path:
    make_folder(tmp_path / "src")
    return tmp_path / "src"


def write_lists(root: Path, **lists: list[str]) -> None:
    for name, ids in lists.items():
        (root / f"{name}.txt").write_text("\n".join(ids) + "\n")


# The problems a user meets, each with its exact message.


def test_a_labeled_id_without_a_mask(src: Path, tmp_path: Path) -> None:
    write_lists(src, labeled=["a0", "a5"], unlabeled=["a6", "a7"], val=["a1"])
    found = problems(src, tmp_path / "out", split="lists", val=None, labeled=2)
    assert found == [
        f"{src}/labeled.txt: labeled id 'a5' has no mask ({src}/masks/a5.png not found)"
    ]


def test_a_mask_whose_size_differs_from_its_image(src: Path, tmp_path: Path) -> None:
    _mask(size=(SIZE, SIZE - 1)).save(src / "masks" / "a2.png")
    assert problems(src, tmp_path / "out") == [
        f"{src}/masks/a2.png: mask is 8×7 (width×height) but its image {src}/images/a2.png is 8×8"
    ]


def test_a_mask_value_at_or_above_the_class_count(src: Path, tmp_path: Path) -> None:
    _mask(values=(0, 1, 255, 2, 7)).save(src / "masks" / "a3.png")  # 255 (ignore) is fine
    assert problems(src, tmp_path / "out") == [
        f"{src}/masks/a3.png: values [2, 7] but {src}/classes.txt lists 2 classes (values 0..1, "
        "and 255 = ignore)"
    ]


def test_an_unreadable_image(src: Path, tmp_path: Path) -> None:
    (src / "images" / "a6.png").write_bytes(b"<html>404</html>")
    data = (src / "images" / "a7.png").read_bytes()
    (src / "images" / "a7.png").write_bytes(data[: len(data) // 2])  # truncated
    found = problems(src, tmp_path / "out")
    assert [p.split(" (")[0] for p in found] == [
        f"{src}/images/a6.png: unreadable image",
        f"{src}/images/a7.png: unreadable image",
    ]


def test_duplicate_ids_in_the_folder_and_in_a_list(src: Path, tmp_path: Path) -> None:
    _image(9).convert("RGB").save(src / "images" / "a1.jpg")
    write_lists(src, labeled=["a0", "a2", "a0"], unlabeled=["a6", "a7"], val=["a3"])
    assert problems(src, tmp_path / "out", split="lists", val=None, labeled=2) == [
        f"{src}/images/a1.jpg, {src}/images/a1.png: two images with the id 'a1'",
        f"{src}/labeled.txt: line 3: id 'a0' repeats line 1",
    ]


def test_folder_and_file_problems_are_reported_together(src: Path, tmp_path: Path) -> None:
    # A duplicate id or a bad class list does not hide the files' own problems.
    _image(9).convert("RGB").save(src / "images" / "a1.jpg")
    _mask(size=(SIZE + 1, SIZE), values=(0, 3)).save(src / "masks" / "a2.png")
    (src / "classes.txt").write_text("background\nbackground\n")
    assert problems(src, tmp_path / "out") == [
        f"{src}/classes.txt: line 2: class 'background' repeats line 1",
        f"{src}/images/a1.jpg, {src}/images/a1.png: two images with the id 'a1'",
        f"{src}/masks/a2.png: mask is 9×8 (width×height) but its image {src}/images/a2.png is 8×8",
    ]


def test_an_empty_unlabeled_list(src: Path, tmp_path: Path) -> None:
    write_lists(src, labeled=["a0", "a1"], unlabeled=[], val=["a2"])
    assert problems(src, tmp_path / "out", split="lists", val=None, labeled=2) == [
        f"{src}/unlabeled.txt: no ids; semi-supervised training needs unlabeled images"
    ]


def test_every_problem_is_collected_and_the_message_shows_the_first(
    src: Path, tmp_path: Path
) -> None:
    for k in range(MAX_SHOWN + 3):
        _mask().save(src / "masks" / f"stray{k:02d}.png")  # masks with no image
    (src / "classes.txt").write_text("background\nobject\ncell\n")  # 3 classes, params say 2
    with pytest.raises(CustomDataError) as err:
        prepare_custom(params_for(src), tmp_path / "out", progress=False)
    found = err.value.problems
    assert len(found) == MAX_SHOWN + 4
    assert found[0] == (
        f"{src}/classes.txt: lists 3 classes (background, object, cell) but model.num_classes=2; "
        "set model.num_classes: 3"
    )
    assert found[1] == f"{src}/masks/stray00.png: no image with the id 'stray00' in {src}/images"
    lines = str(err.value).splitlines()
    assert lines[0] == f"{src}: {MAX_SHOWN + 4} problems with the custom dataset"
    assert lines[1:-1] == [f"  {p}" for p in found[:MAX_SHOWN]]
    assert lines[-1] == f"  … and 4 more (the first {MAX_SHOWN} are shown)"


def test_ids_in_two_lists_and_unknown_ids(src: Path, tmp_path: Path) -> None:
    write_lists(src, labeled=["a0", "a1"], unlabeled=["a1", "zz"], val=["a2"])
    assert problems(src, tmp_path / "out", split="lists", val=None, labeled=2) == [
        f"{src}/unlabeled.txt: id 'zz' has no image in {src}/images",
        f"{src}/unlabeled.txt: id 'a1' is also in labeled.txt",
    ]


def test_masks_that_mark_objects_with_255_are_caught(src: Path, tmp_path: Path) -> None:
    # The usual binary export (0 and 255) would train on background alone: 255 is ignore.
    for k in range(4):
        _mask(values=(0, 255)).save(src / "masks" / f"a{k}.png")
    assert problems(src, tmp_path / "out") == [
        f"{src}/masks: no mask of a train image holds a class other than 0 (background); 255 "
        "means ignore, so masks that mark objects with 255 must store class k as the value k"
    ]


def test_a_16_bit_image_and_a_colour_mask(src: Path, tmp_path: Path) -> None:
    Image.fromarray(np.full((SIZE, SIZE), 300, np.uint16)).save(src / "images" / "a5.png")
    Image.new("RGB", (SIZE, SIZE)).save(src / "masks" / "a0.png")
    assert problems(src, tmp_path / "out") == [
        f"{src}/masks/a0.png: a mode RGB image, not an index mask; save the class index of "
        "every pixel as a single-channel PNG",
        f"{src}/images/a5.png: a I;16 image (16-bit or float); save it as 8-bit grayscale or RGB",
    ]


def test_val_holding_out_every_masked_image(src: Path, tmp_path: Path) -> None:
    assert problems(src, tmp_path / "out", val=4) == [
        f"{src}/masks: data.custom.val=4 holds out all 4 masked images, leaving none to label"
    ]


def test_val_from_the_folders_val_txt(src: Path, tmp_path: Path) -> None:
    write_lists(src, val=["a1", "a6"])
    assert problems(src, tmp_path / "out", val=None) == [
        f"{src}/val.txt: val id 'a6' has no mask ({src}/masks/a6.png not found)"
    ]
    write_lists(src, val=["a1"])
    prepare_custom(params_for(src, val=None), tmp_path / "out", progress=False)
    assert (tmp_path / "out/ImageSets/Segmentation/val.txt").read_text() == "a1"


def test_a_folder_without_masks(src: Path, tmp_path: Path) -> None:
    for mask in (src / "masks").iterdir():
        mask.unlink()
    assert problems(src, tmp_path / "out") == [f"{src}/masks: no masks (.png)"]


def test_the_class_list_format(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_text("background\n\ntraffic light #FAAA1E\nsky #12345\nsky\n")
    found: list[str] = []
    assert read_classes(path, found) is None
    assert found == [
        f"{path}: line 4: colour '#12345' is not #RRGGBB",
        f"{path}: line 5: class 'sky' repeats line 4",
    ]
    path.write_text("background\ntraffic light #FAAA1E\n")
    classes = read_classes(path, found := [])
    assert classes is not None and found == []
    assert classes.names == ["background", "traffic light"]
    assert classes.colours == [(0, 0, 0), (250, 170, 30)]  # VOC's colour where none is given
    assert classes.palette()[:6] == [0, 0, 0, 250, 170, 30]
    path.write_text("object\n")
    read_classes(path, found := [])
    assert found == [f"{path}: 1 class(es); a segmentation needs at least 2 (e.g. background and "
                     "the object)"]  # fmt: skip


def test_the_output_may_not_overlap_the_folder(src: Path) -> None:
    with pytest.raises(DataError, match="overlaps the download stage's output"):
        prepare_custom(params_for(src), src / "prepared", progress=False)


# The prepared root.


def test_prepare_converts_and_lists_a_drawn_val(src: Path, tmp_path: Path) -> None:
    (src / "images" / ".DS_Store").write_bytes(b"\0")  # hidden files are not images
    _image(20).convert("RGB").save(src / "images" / "a8.jpg")
    _image(21).save(src / "images" / "a9.tif")
    out = tmp_path / "out"
    summary = prepare_custom(params_for(src, val=1), out, progress=False)
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
    assert np.array_equal(read_mask(out / "masks/a0.png", 2).numpy(), np.asarray(_mask()))


def test_prepare_keeps_the_folders_lists(src: Path, tmp_path: Path) -> None:
    write_lists(src, labeled=["a2", "a0"], unlabeled=["a7", "a5", "a6"], val=["a3"])
    out = tmp_path / "out"
    prepare_custom(params_for(src, split="lists", val=None, labeled=2), out, progress=False)
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
    prepare_custom(params_for(src, val=1), tmp_path / "c", progress=False)
    written = json.loads((tmp_path / "c/normalization.json").read_text())
    train = (tmp_path / "c/ImageSets/Segmentation/train_aug.txt").read_text().split()
    expected = channel_stats(np.asarray(Image.open(tmp_path / f"c/images/{i}.png")) for i in train)
    assert written == {"source": "computed", **expected.as_dict()}
    prepare_custom(params_for(src, val=1, normalize="imagenet"), tmp_path / "i", progress=False)
    written = json.loads((tmp_path / "i/normalization.json").read_text())
    assert written == {"source": "imagenet", **IMAGENET.as_dict()}


# Params.


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            "data.custom",
            {"split": "lists", "val": 3},
            "data.custom.val=3 but data.custom.split='lists' reads the folder's val.txt; set "
            "val: null",
        ),
        (
            "data.custom",
            {"masks": "../elsewhere"},
            "data.custom.masks='../elsewhere' must be a path inside data.custom.root",
        ),
        (
            "data.split",
            {"source": "published"},
            "data.split.source='published': a custom dataset has no published lists; use "
            "'generated' (your own lists: data.custom.split: lists)",
        ),
        ("data", {"custom": None}, "dataset 'custom' needs data.custom in params"),
    ],
)
def test_params_reject_an_inconsistent_custom_section(
    tmp_path: Path, path: str, value: dict[str, Any], message: str
) -> None:
    raw = tiny_custom(tiny_params(), "src")
    section = raw
    for key in path.split("."):
        section = section[key]
    section.update(value)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=re.escape(message)):
        load_params(tmp_path / "params.yaml")
