"""dataset: custom at the split stage: the seeded draw (deterministic, nested across counts, the
unlabeled set with and without masks), the folder's own lists, and the checks of the prepared
root that fail before any training, each naming its file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from support.custom_data import write_example
from support.params import tiny_custom, tiny_params

from pipeline.acquire.custom import prepare_custom
from pipeline.acquire.custom_folder import CustomDataError
from pipeline.acquire.prepare import split_lists
from pipeline.config.params import Params

SETS = Path("ImageSets/Segmentation")


def params_for(root: Path, **options: Any) -> Params:
    raw = tiny_custom(tiny_params(), str(root), **options)
    return Params.model_validate(raw)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[str]]]:
    """The README's folder (48 images, 16 masked) prepared with 4 masked images held out."""
    base = tmp_path_factory.mktemp("custom")
    ids = write_example(base / "src")
    prepare_custom(params_for(base / "src"), base / "data", progress=False)
    return base / "data", ids


@pytest.fixture
def data(example: tuple[Path, dict[str, list[str]]], tmp_path: Path) -> Path:
    """A copy of the prepared root to spoil."""
    shutil.copytree(example[0], tmp_path / "data")
    return tmp_path / "data"


def split(data: Path, **options: Any) -> tuple[list[str], list[str]]:
    return split_lists(params_for(data.parent / "src", **options), data, progress=False)


def problems(data: Path, **options: Any) -> list[str]:
    with pytest.raises(CustomDataError) as err:
        split(data, **options)
    return err.value.problems


def test_the_draw_is_seeded_nested_and_leaves_every_other_image_unlabeled(
    example: tuple[Path, dict[str, list[str]]],
) -> None:
    data, ids = example
    masked = (data / SETS / "train.txt").read_text().split()
    pool = (data / SETS / "train_aug.txt").read_text().split()
    assert len(masked) == 12 and len(pool) == 44  # 4 of the 16 masked images are val
    labeled, unlabeled = split(data, labeled=8)
    assert (labeled, unlabeled) == split(data, labeled=8)  # the same seed, the same split
    assert len(labeled) == 8 and set(labeled) <= set(masked)
    assert unlabeled == [i for i in pool if i not in set(labeled)]  # pool order
    assert set(ids["unmasked"]) <= set(unlabeled)  # images without a mask are unlabeled
    small, _ = split(data, labeled=4)
    assert set(small) < set(labeled)  # nested across counts, as the built-in splits
    other = Params.model_validate({**tiny_custom(tiny_params(), "src", labeled=8), "seed": 1})
    assert split_lists(other, data, progress=False)[0] != labeled


def test_a_count_above_the_masked_images(data: Path) -> None:
    assert problems(data, labeled=13) == [
        f"{data / SETS}/train.txt: labeled=13 exceeds the 12 train images with a mask"
    ]


def test_an_empty_unlabeled_set_after_the_draw(tmp_path: Path) -> None:
    write_example(tmp_path / "src", images=12, masked=12)  # every image has a mask
    prepare_custom(params_for(tmp_path / "src", val=2), tmp_path / "data", progress=False)
    assert problems(tmp_path / "data", labeled=10) == [
        f"{tmp_path / 'data' / SETS}/train_aug.txt: labeled=10 labels all 10 train images, "
        "leaving none unlabeled; semi-supervised training needs unlabeled images (lower "
        "labeled, or add images without masks)"
    ]
    assert len(split(tmp_path / "data", labeled=9)[1]) == 1


def test_the_folders_lists_must_match_labeled(data: Path) -> None:
    # The prepared root of `split: lists` holds the folder's lists.
    (data / SETS / "labeled.txt").write_text("img000\nimg001")
    (data / SETS / "unlabeled.txt").write_text("img020\nimg021")
    options = {"split": "lists", "val": None}
    assert split(data, labeled=2, **options) == (["img000", "img001"], ["img020", "img021"])
    assert problems(data, labeled=3, **options) == [
        f"{data / SETS}/labeled.txt: lists 2 labeled ids but labeled=3; set labeled: 2"
    ]


def test_files_spoiled_after_the_download_stage(data: Path) -> None:
    labeled, _ = split(data, labeled=8)
    (data / "masks" / f"{labeled[0]}.png").unlink()
    bad = np.zeros((32, 32), np.uint8)
    bad[0, 0] = 5
    Image.fromarray(bad).save(data / "masks" / f"{labeled[1]}.png")
    unlabeled_image = data / "images" / "img040.png"
    unlabeled_image.write_bytes(b"not a png")
    found = problems(data, labeled=8)
    assert found[0] == f"{data}/masks/{labeled[0]}.png: labeled id '{labeled[0]}' has no mask"
    assert found[1] == (
        f"{data}/masks/{labeled[1]}.png: values [5] but {data}/classes.json lists 2 classes "
        "(values 0..1, and 255 = ignore)"
    )
    assert found[2].startswith(f"{unlabeled_image}: unreadable image (")
    assert len(found) == 3


def test_the_class_count_and_val_sizes(data: Path) -> None:
    val = (data / SETS / "val.txt").read_text().split()
    for name in ("images", "masks"):
        img = Image.open(data / name / f"{val[1]}.png")
        img.resize((40, 30)).save(data / name / f"{val[1]}.png")
    raw = tiny_custom(tiny_params(), "src", labeled=8)
    raw["model"]["num_classes"] = 3
    raw["evaluate"]["batch_size"] = 4
    with pytest.raises(CustomDataError) as err:
        split_lists(Params.model_validate(raw), data, progress=False)
    assert err.value.problems == [
        f"{data}/classes.json: lists 2 classes (background, blob) but model.num_classes=3; set "
        "model.num_classes: 2",
        f"{data / SETS}/val.txt: val images differ in size ({val[0]} 32×32, {val[1]} 40×30), so "
        "they cannot be batched: set evaluate.batch_size: 1 (it is 4)",
    ]
    raw["model"]["num_classes"], raw["evaluate"]["batch_size"] = 2, 1
    assert len(split_lists(Params.model_validate(raw), data, progress=False)[0]) == 8


def test_the_prepared_classes_and_palette(example: tuple[Path, dict[str, list[str]]]) -> None:
    data, _ = example
    assert json.loads((data / "classes.json").read_text()) == ["background", "blob"]
    assert json.loads((data / "palette.json").read_text()) == [[0, 0, 0], [255, 0, 0]]
