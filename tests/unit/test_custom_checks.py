"""dataset: custom — the checks of the download stage: every problem of a folder collected, each
named by its file, with its exact message; and the params of the custom section."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from support.custom_data import TINY, make_folder, tiny_image, tiny_mask, write_lists
from support.params import custom_params, tiny_custom, tiny_params

from imas.data import DataError
from pipeline.acquire.custom import prepare_custom
from pipeline.acquire.custom_folder import MAX_SHOWN, CustomDataError, read_classes
from pipeline.config.params import ParamsError, load_params


@pytest.fixture
def src(tmp_path: Path) -> Path:
    make_folder(tmp_path / "src")
    return tmp_path / "src"


def problems(root: Path, out: Path, **options: Any) -> list[str]:
    with pytest.raises(CustomDataError) as err:
        prepare_custom(custom_params(root, **options), out, progress=False)
    assert not out.exists()  # nothing written, not even a partial root
    assert not list(out.parent.glob(f".{out.name}.building-*"))
    return err.value.problems


# The problems a user meets, each with its exact message.


def test_a_labeled_id_without_a_mask(src: Path, tmp_path: Path) -> None:
    write_lists(src, labeled=["a0", "a5"], unlabeled=["a6", "a7"], val=["a1"])
    found = problems(src, tmp_path / "out", split="lists", val=None, labeled=2)
    assert found == [
        f"{src}/labeled.txt: labeled id 'a5' has no mask ({src}/masks/a5.png not found)"
    ]


def test_a_mask_whose_size_differs_from_its_image(src: Path, tmp_path: Path) -> None:
    tiny_mask(size=(TINY, TINY - 1)).save(src / "masks" / "a2.png")
    assert problems(src, tmp_path / "out") == [
        f"{src}/masks/a2.png: mask is 8×7 (width×height) but its image {src}/images/a2.png is 8×8"
    ]


def test_a_mask_value_at_or_above_the_class_count(src: Path, tmp_path: Path) -> None:
    tiny_mask(values=(0, 1, 255, 2, 7)).save(src / "masks" / "a3.png")  # 255 (ignore) is fine
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
    tiny_image(9).convert("RGB").save(src / "images" / "a1.jpg")
    write_lists(src, labeled=["a0", "a2", "a0"], unlabeled=["a6", "a7"], val=["a3"])
    assert problems(src, tmp_path / "out", split="lists", val=None, labeled=2) == [
        f"{src}/images/a1.jpg, {src}/images/a1.png: two images with the id 'a1'",
        f"{src}/labeled.txt: line 3: id 'a0' repeats line 1",
    ]


def test_folder_and_file_problems_are_reported_together(src: Path, tmp_path: Path) -> None:
    # A duplicate id or a bad class list does not hide the files' own problems.
    tiny_image(9).convert("RGB").save(src / "images" / "a1.jpg")
    tiny_mask(size=(TINY + 1, TINY), values=(0, 3)).save(src / "masks" / "a2.png")
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
        tiny_mask().save(src / "masks" / f"stray{k:02d}.png")  # masks with no image
    (src / "classes.txt").write_text("background\nobject\ncell\n")  # 3 classes, params say 2
    with pytest.raises(CustomDataError) as err:
        prepare_custom(custom_params(src), tmp_path / "out", progress=False)
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
        tiny_mask(values=(0, 255)).save(src / "masks" / f"a{k}.png")
    assert problems(src, tmp_path / "out") == [
        f"{src}/masks: no mask of a train image holds a class other than 0 (background); 255 "
        "means ignore, so masks that mark objects with 255 must store class k as the value k"
    ]


def test_a_16_bit_image_and_a_colour_mask(src: Path, tmp_path: Path) -> None:
    Image.fromarray(np.full((TINY, TINY), 300, np.uint16)).save(src / "images" / "a5.png")
    Image.new("RGB", (TINY, TINY)).save(src / "masks" / "a0.png")
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
    prepare_custom(custom_params(src, val=None), tmp_path / "out", progress=False)
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
        prepare_custom(custom_params(src), src / "prepared", progress=False)


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
