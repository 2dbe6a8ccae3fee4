"""The split stage of dataset: custom: the labeled and unlabeled lists over the prepared root
(pipeline/acquire/custom.py), and a check of every file the training stages will read.

`split: draw` draws `labeled` ids with `seed` from the train images with a mask (`train.txt`),
as the built-in and VOC splits do (`make_split`: for one seed a smaller count is a subset of a
larger one); the unlabeled set is every other train image (`train_aug.txt`), masked or not.
`split: lists` takes the folder's lists, whose length `labeled` must state. Then every listed
image is decoded and every labeled and val mask checked against its image and the class list,
so a problem fails this stage, naming the file, and not a training hours later.
"""

from __future__ import annotations

import json
from pathlib import Path

from imas.data.catalogue import CUSTOM_LAYOUT
from pipeline.acquire.custom_folder import (
    CustomDataError,
    class_count_problem,
    decode_all,
    read_ids,
)
from pipeline.acquire.split_lists import generated_split
from pipeline.config.params import Params

SETS = Path("ImageSets") / "Segmentation"


def _class_names(path: Path, problems: list[str]) -> list[str]:
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"{path}: not found; run the download stage (imas download) first")
        return []
    except ValueError as err:
        problems.append(f"{path}: not valid JSON ({err})")
        return []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        problems.append(f"{path}: expected a JSON list of class names")
        return []
    return names


def _draw(params: Params, sets: Path, problems: list[str]) -> tuple[list[str], list[str]]:
    before = len(problems)
    masked = read_ids(sets / "train.txt", problems)
    pool = read_ids(sets / "train_aug.txt", problems)
    if len(problems) > before:
        return [], []
    if params.labeled > len(masked):
        problems.append(
            f"{sets / 'train.txt'}: labeled={params.labeled} exceeds the {len(masked)} train "
            "images with a mask"
        )
        return [], []
    try:
        labeled, unlabeled = generated_split(masked, pool, params.labeled, params.seed)
    except ValueError as err:
        problems.append(f"{sets / 'train.txt'}: {err} ({sets / 'train_aug.txt'})")
        return [], []
    if not unlabeled:
        problems.append(
            f"{sets / 'train_aug.txt'}: labeled={params.labeled} labels all {len(pool)} train "
            "images, leaving none unlabeled; semi-supervised training needs unlabeled images "
            "(lower labeled, or add images without masks)"
        )
    return labeled, unlabeled


def _lists(params: Params, sets: Path, problems: list[str]) -> tuple[list[str], list[str]]:
    labeled = read_ids(sets / "labeled.txt", problems)
    unlabeled = read_ids(sets / "unlabeled.txt", problems)
    if (sets / "labeled.txt").is_file() and len(labeled) != params.labeled:
        problems.append(
            f"{sets / 'labeled.txt'}: lists {len(labeled)} labeled ids but labeled="
            f"{params.labeled}; set labeled: {len(labeled)}"
        )
    if (sets / "unlabeled.txt").is_file() and not unlabeled:
        problems.append(
            f"{sets / 'unlabeled.txt'}: no ids; semi-supervised training needs unlabeled images"
        )
    return labeled, unlabeled


def custom_split(params: Params, data: Path, progress: bool) -> tuple[list[str], list[str]]:
    """The labeled and unlabeled ids of root `data`; CustomDataError listing every problem with
    the lists or the files they name."""
    cfg = params.data.custom
    assert cfg is not None
    problems: list[str] = []
    classes_file = data / "classes.json"
    names = _class_names(classes_file, problems)
    problem = class_count_problem(params.model.num_classes, names, classes_file) if names else None
    if problem:
        problems.append(problem)
    sets = data / SETS
    labeled, unlabeled = (_lists if cfg.split == "lists" else _draw)(params, sets, problems)
    val = read_ids(sets / "val.txt", problems)
    named = {"labeled": labeled, "unlabeled": unlabeled, "val": val}
    for first, second in (("labeled", "unlabeled"), ("labeled", "val"), ("unlabeled", "val")):
        for i in sorted(set(named[first]) & set(named[second])):
            problems.append(f"{sets}: id {i!r} is both {first} and {second}")
    if names:
        _check_files(params, data, labeled, unlabeled, val, len(names), problems, progress)
    if problems:
        raise CustomDataError(data, problems)
    return labeled, unlabeled


def _check_files(
    params: Params,
    data: Path,
    labeled: list[str],
    unlabeled: list[str],
    val: list[str],
    classes: int,
    problems: list[str],
    progress: bool,
) -> None:
    """Decode every image of the three lists and every labeled and val mask; whole-image
    evaluation in batches also needs val images of one size."""

    def image(i: str) -> Path:
        return CUSTOM_LAYOUT.image_path(data, i)

    def mask(i: str) -> Path:
        return CUSTOM_LAYOUT.mask_path(data, i)

    masked: set[str] = set()
    for kind, ids in (("labeled", labeled), ("val", val)):
        for i in ids:
            if mask(i).is_file():
                masked.add(i)
            else:
                problems.append(f"{mask(i)}: {kind} id {i!r} has no mask")
    sizes: dict[tuple[int, int], str] = {}
    checked = decode_all(
        labeled + unlabeled + val, image, mask, masked, classes, data / "classes.json",
        problems, progress,
    )  # fmt: skip
    val_ids = set(val)
    for d in checked:
        if d.id in val_ids:
            sizes.setdefault((d.image.shape[1], d.image.shape[0]), d.id)
    if len(sizes) > 1 and params.evaluate.batch_size > 1:
        shown = ", ".join(f"{i} {w}×{h}" for (w, h), i in list(sizes.items())[:3])
        problems.append(
            f"{data / SETS / 'val.txt'}: val images differ in size ({shown}), so they cannot be "
            f"batched: set evaluate.batch_size: 1 (it is {params.evaluate.batch_size})"
        )
