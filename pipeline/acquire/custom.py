"""dataset: custom, a folder the user already has, made into a root the training stages read.

The folder (`data.custom`): `images/` (jpg, png or tif; RGB or grayscale; any size), `masks/`
(index PNGs, for the images that have labels only), the class list, and either the lists
`labeled.txt`, `unlabeled.txt`, `val.txt` (`split: lists`) or none of them (`split: draw`:
val from `val.txt` or held out by `data.custom.val`, the labels drawn by the split stage).

The download stage checks all of it and writes the prepared root (atomically, nothing when a
check fails): `images/<id>.png` (RGB: gray replicated to three channels), `masks/<id>.png`
(index PNGs with the class colours as palette), `classes.json`, `palette.json`,
`normalization.json` (ImageNet's mean and std, or the train images'), and in
`ImageSets/Segmentation/`: `train.txt` (the train images with a mask: where labels are drawn
from), `train_aug.txt` (every train image), `val.txt` and, for `split: lists`, `labeled.txt`
and `unlabeled.txt`. The split stage (custom_split.py) checks that root again with the lists.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imas.data import DataError
from imas.data.layout import Classes
from imas.data.normalization import IMAGENET, ChannelSums
from imas.data.splits import make_split, write_list
from pipeline.acquire.custom_folder import (
    IMAGE_SUFFIXES,
    MASK_SUFFIXES,
    MAX_CLASSES,
    CustomDataError,
    Decoded,
    class_count_problem,
    decode_all,
    read_classes,
    read_ids,
    scan,
)
from pipeline.acquire.prepare import build_atomically
from pipeline.config.params import Params
from pipeline.config.sections import CustomParams

SETS = Path("ImageSets") / "Segmentation"
NORMALIZATION_FILE = "normalization.json"
Files = dict[str, Path]  # id → file
# What each list of `split: lists` is for, as an empty one's problem says.
NEEDED = {
    "labeled": "training needs labeled images",
    "unlabeled": "semi-supervised training needs unlabeled images",
    "val": "the best epoch is chosen on val images",
}


@dataclass(frozen=True)
class Sets:
    """Which ids the prepared root keeps, and as what: every train image (the pool labeled and
    unlabeled come from), the train images whose mask is kept (where labels come from), val,
    and for `split: lists` the folder's labeled and unlabeled lists."""

    train: list[str]
    masked: list[str]
    val: list[str]
    lists: dict[str, list[str]] | None = None


def _check_ids(
    path: Path,
    kind: str,
    ids: list[str],
    cfg: CustomParams,
    images: Files,
    masks: Files,
    problems: list[str],
) -> None:
    """Each id of list `path` needs its image and, unless `kind` is unlabeled, its mask; the
    list may not be empty."""
    root = Path(cfg.root)
    if path.is_file() and not ids:
        problems.append(f"{path}: no ids; {NEEDED[kind]}")
    for i in ids:
        if i not in images:
            problems.append(f"{path}: id {i!r} has no image in {root / cfg.images}")
        elif kind != "unlabeled" and i not in masks:
            problems.append(
                f"{path}: {kind} id {i!r} has no mask ({root / cfg.masks / i}.png not found)"
            )


def _check_lists(
    cfg: CustomParams, root: Path, images: Files, masks: Files, problems: list[str]
) -> Sets:
    """split: lists. Every listed id needs its image, labeled and val ids their mask; no id
    in two lists; no list empty."""
    lists = {name: read_ids(root / f"{name}.txt", problems) for name in NEEDED}
    for name, ids in lists.items():
        _check_ids(root / f"{name}.txt", name, ids, cfg, images, masks, problems)
    for first, second in (("labeled", "unlabeled"), ("labeled", "val"), ("unlabeled", "val")):
        for i in sorted(set(lists[first]) & set(lists[second])):
            problems.append(f"{root / (second + '.txt')}: id {i!r} is also in {first}.txt")
    train = lists["labeled"] + lists["unlabeled"]
    named = {"labeled": lists["labeled"], "unlabeled": lists["unlabeled"]}
    return Sets(train, lists["labeled"], lists["val"], named)


def _check_draw(
    cfg: CustomParams, root: Path, images: Files, masks: Files, problems: list[str]
) -> Sets:
    """split: draw. Val from val.txt (each with image and mask) or `cfg.val` masked images
    held out with `cfg.seed`; the train images are the rest, labels to be drawn from the
    masked ones."""
    masked_all = [i for i in images if i in masks]
    if cfg.val is None:
        val = read_ids(root / "val.txt", problems)
        _check_ids(root / "val.txt", "val", val, cfg, images, masks, problems)
    elif not masked_all:  # `scan` has said why: no masks, or none whose image exists
        val = []
    elif cfg.val >= len(masked_all):
        problems.append(
            f"{root / cfg.masks}: data.custom.val={cfg.val} holds out all {len(masked_all)} "
            "masked images, leaving none to label"
        )
        val = []
    else:
        val = make_split(masked_all, cfg.val, cfg.seed)[0]
    held_out = set(val)
    train = [i for i in images if i not in held_out]
    masked = [i for i in train if i in masks]
    if masked_all and not masked:
        problems.append(f"{root / cfg.masks}: every masked image is in val.txt: none to label")
    return Sets(train, masked, val)


def _write(
    root: Path, i: str, image: np.ndarray, mask: np.ndarray | None, palette: list[int]
) -> None:
    image_file = root / "images" / f"{i}.png"
    image_file.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(image_file, format="PNG")
    if mask is not None:
        mask_file = root / "masks" / f"{i}.png"
        mask_file.parent.mkdir(parents=True, exist_ok=True)
        indexed = Image.fromarray(mask)
        indexed.putpalette(palette)  # L → P: the indices stay, viewers show the class colours
        indexed.save(mask_file, format="PNG")


def prepare_custom(params: Params, out: Path, progress: bool) -> dict[str, Any]:
    """Check the folder of `data.custom` and write the prepared root `out`; CustomDataError
    listing every problem found (and nothing written) when a check fails."""
    cfg = params.data.custom
    assert cfg is not None
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"{root}: data.custom.root is not a folder")
    src, dst = root.resolve(), out.resolve()
    if src == dst or dst in src.parents or src in dst.parents:
        raise DataError(
            f"{root}: data.custom.root overlaps the download stage's output {out}, which is "
            "replaced on every run; keep your folder elsewhere"
        )
    problems: list[str] = []
    classes_file = root / cfg.classes
    classes = read_classes(classes_file, problems)
    if classes is not None:
        problem = class_count_problem(params.model.num_classes, classes.names, classes_file)
        if problem:
            problems.append(problem)
    images = scan(root / cfg.images, IMAGE_SUFFIXES, "image", problems)
    masks = scan(root / cfg.masks, MASK_SUFFIXES, "mask", problems)
    for i, path in masks.items():
        if i not in images:
            problems.append(f"{path}: no image with the id {i!r} in {root / cfg.images}")
    check = _check_lists if cfg.split == "lists" else _check_draw
    sets = check(cfg, root, images, masks, problems)
    if problems or classes is None:
        # Still decode every file the lists name, so that one run reports every problem.
        # Without a class list the values cannot be checked: 256 lets every uint8 pass.
        count = MAX_CLASSES + 1 if classes is None else len(classes.names)
        for _ in _decoded(cfg, root, sets, images, masks, count, problems, progress):
            pass
        raise CustomDataError(root, problems)
    return build_atomically(
        out, lambda tmp: _convert(cfg, root, tmp, sets, images, masks, classes, progress)
    )


def _decoded(
    cfg: CustomParams,
    root: Path,
    sets: Sets,
    images: Files,
    masks: Files,
    classes: int,
    problems: list[str],
    progress: bool,
) -> Iterator[Decoded]:
    """Every train and val image that exists, with its mask when it is kept, checked."""
    ids = [i for i in sets.train + sets.val if i in images]
    masked = (set(sets.masked) | set(sets.val)) & masks.keys()
    yield from decode_all(
        ids, images.__getitem__, masks.__getitem__, masked, classes, root / cfg.classes,
        problems, progress,
    )  # fmt: skip


def _convert(
    cfg: CustomParams,
    root: Path,
    out: Path,
    sets: Sets,
    images: Files,
    masks: Files,
    classes: Classes,
    progress: bool,
) -> dict[str, Any]:
    problems: list[str] = []
    labeled_pool, train = set(sets.masked), set(sets.train)
    palette = classes.palette()
    sums = ChannelSums()
    foreground = False
    count = len(classes.names)
    for d in _decoded(cfg, root, sets, images, masks, count, problems, progress):
        _write(out, d.id, d.image, d.mask, palette)
        if d.id in train:
            sums.add(d.image)
        if d.mask is not None and d.id in labeled_pool:
            foreground = foreground or bool(((d.mask > 0) & (d.mask < 255)).any())
    if not foreground and not problems:
        problems.append(
            f"{root / cfg.masks}: no mask of a train image holds a class other than 0 "
            f"({classes.names[0]}); 255 means ignore, so masks that mark objects with 255 "
            "must store class k as the value k"
        )
    norm = IMAGENET
    if cfg.normalize == "computed" and not problems:
        try:
            norm = sums.result()
        except ValueError as err:
            problems.append(f"{root / cfg.images}: train images: {err}")
    if problems:
        raise CustomDataError(root, problems)
    lists = {"train": sets.masked, "train_aug": sets.train, "val": sets.val, **(sets.lists or {})}
    for name, ids in lists.items():
        write_list(out / SETS / f"{name}.txt", ids)
    (out / "classes.json").write_text(json.dumps(classes.names) + "\n", encoding="utf-8")
    palette_json = json.dumps([list(c) for c in classes.colours])
    (out / "palette.json").write_text(palette_json + "\n", encoding="utf-8")
    stats = {"source": cfg.normalize, **norm.as_dict()}
    (out / NORMALIZATION_FILE).write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    summary: dict[str, Any] = {
        "classes": len(classes.names),
        "train_images": len(sets.train),
        "train_masked": len(sets.masked),
        "val_images": len(sets.val),
    }
    for c, channel in enumerate("rgb"):
        summary[f"mean_{channel}"] = norm.mean[c]
        summary[f"std_{channel}"] = norm.std[c]
    return summary
