"""What differs between the datasets, in one place: preparing the root, the split, the layout.

Every dataset ends up as one root that the training stages read the same way:
`ImageSets/Segmentation/{train,val}.txt` (VOC adds `train_aug.txt`, its unlabeled pool),
`classes.json`, and the images and masks where `layout_for(dataset)` says. Real datasets are
built in a temporary sibling and renamed into place, so a failed download or conversion never
leaves a half-built root for DVC to cache.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from imas.data import DataError
from imas.data.catalogue import VOC_CLASSES, layout_for
from imas.data.layout import check_listed
from imas.data.splits import make_split, read_list, write_list
from pipeline.config.params import Params


def build_atomically(out: Path, build: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Run `build` on a temporary sibling of `out`, then rename it into place; when `build`
    raises, `out` stays as it was and the sibling is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.building-"))
    try:
        summary = build(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _build_voc(params: Params, root: Path, progress: bool) -> dict[str, Any]:
    from pipeline.acquire.pascal import (
        SBD_SOURCE,
        VOC_SOURCE,
        build_segmentation_aug,
        fetch_voc_sbd,
    )

    cfg = params.data.voc
    voc_root, sbd_root = fetch_voc_sbd(
        Path(cfg.downloads),
        voc=dataclasses.replace(VOC_SOURCE, urls=tuple(cfg.voc_urls)),
        sbd=dataclasses.replace(SBD_SOURCE, urls=tuple(cfg.sbd_urls)),
        progress=progress,
    )
    counts = build_segmentation_aug(voc_root, sbd_root, root, progress=progress)
    (root / "classes.json").write_text(json.dumps(list(VOC_CLASSES)) + "\n")
    return counts


def _build_cityscapes(params: Params, root: Path, progress: bool) -> dict[str, Any]:
    from pipeline.acquire import cityscapes as cs

    archives = cs.download_packages(Path(params.data.cityscapes.downloads), progress=progress)
    cs.extract_packages(archives, root, progress=progress)
    written = cs.create_train_ids(root, progress=progress)
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    counts = {"train_id_masks": written}
    for split in cs.SPLITS:
        ids = cs.list_ids(root, split)
        write_list(sets / f"{split}.txt", ids)
        counts[split] = len(ids)
    (root / "classes.json").write_text(json.dumps(cityscapes_classes()) + "\n")
    return counts


def cityscapes_classes() -> list[str]:
    """The 19 evaluated classes in trainId order, from cityscapesscripts' official table."""
    from cityscapesscripts.helpers.labels import labels

    named = sorted((lab.trainId, lab.name) for lab in labels if 0 <= lab.trainId < 19)
    return [name for _, name in named]


def prepare_garments(params: Params, out: Path, progress: bool) -> dict[str, Any]:
    """Write the garment scenes to `out` (atomically) and return flat counts for tracking; the
    full summary (measured foreground and ignore per split) is `out/summary.json`."""
    from pipeline.acquire import fashion_mnist
    from pipeline.acquire.garment_dataset import generate
    from pipeline.acquire.garments import SceneSpec

    cfg = params.data.garments
    assert cfg is not None
    files = fashion_mnist.locate(Path(cfg.downloads), cfg.urls, progress=progress)
    spec = SceneSpec(size=cfg.size, objects=cfg.objects, foreground=cfg.foreground)
    counts = {
        "train": cfg.train_scenes,
        "val": cfg.val_scenes,
        "tune": cfg.tune_scenes,
        "test": cfg.test_scenes,
    }
    summary = generate(out, files, spec, counts, cfg.seed, fine=cfg.fine_scenes, progress=progress)
    flat: dict[str, Any] = {f"{k}_scenes": v["scenes"] for k, v in summary["splits"].items()}
    flat["pretrain_glyphs"] = summary["pretrain_glyphs"]
    for split, s in summary["splits"].items():
        flat[f"{split}_foreground_mean"] = s["foreground"][1]
        flat[f"{split}_ignore_max"] = s["ignore"][1]
    return flat


def prepare_real(params: Params, out: Path, progress: bool) -> dict[str, Any]:
    """Download (or reuse the archives in `data.<dataset>.downloads`) and build `out`."""
    build = {"voc": _build_voc, "cityscapes": _build_cityscapes}[params.dataset]
    return build_atomically(out, lambda root: build(params, root, progress))


def _published(params: Params, data: Path, pool: list[str], progress: bool):
    from pipeline.acquire.split_lists import fetch_split, fetch_val_list

    name: Literal["pascal", "cityscapes"] = "pascal" if params.dataset == "voc" else "cityscapes"
    if params.dataset == "cityscapes":
        from pipeline.acquire.cityscapes import id_from_published as to_id
    else:

        def to_id(line: str) -> str:
            return line

    urls = params.data.split.urls
    with tempfile.TemporaryDirectory() as tmp:
        lab_path, unl_path = fetch_split(
            name, params.labeled, Path(tmp), base_urls=urls, progress=progress
        )
        labeled = [to_id(i) for i in read_list(lab_path)]
        unlabeled = [to_id(i) for i in read_list(unl_path)]
        val = {to_id(i) for i in read_list(fetch_val_list(name, Path(tmp), base_urls=urls))}
    where = f"published {name}/{params.labeled} list"
    known = set(pool)
    for ids, kind in ((labeled, "labeled"), (unlabeled, "unlabeled")):
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise DataError(
                f"{where}: {len(unknown)} {kind} id(s) not in the dataset's train pool "
                f"({data}), e.g. {unknown[:3]}"
            )
    both = set(labeled) & set(unlabeled)
    if both:
        raise DataError(f"{where}: {len(both)} id(s) both labeled and unlabeled, e.g. {both}")
    ours = set(read_list(data / "ImageSets" / "Segmentation" / "val.txt"))
    if ours != val:
        raise DataError(
            f"{data}/ImageSets/Segmentation/val.txt differs from the published {name} val list "
            f"({len(ours)} vs {len(val)} ids, {len(ours ^ val)} not shared)"
        )
    return labeled, unlabeled


def split_lists(params: Params, data: Path, progress: bool) -> tuple[list[str], list[str]]:
    """The labeled and unlabeled ids of `params` (count, seed, `data.split`) over root `data`.

    Every labeled id must have its image and mask and every unlabeled id its image, so a list
    naming a file that is not there fails here (DataError naming it), not when training
    reaches it. A custom dataset's split checks every file too (pipeline/acquire/custom_split.py).
    """
    if params.dataset == "custom":
        from pipeline.acquire.custom_split import custom_split

        return custom_split(params, data, progress)
    labeled, unlabeled = _draw(params, data, progress)
    layout = layout_for(params.dataset)
    check_listed(data, labeled, layout, with_masks=True)
    check_listed(data, unlabeled, layout, with_masks=False)
    return labeled, unlabeled


def _draw(params: Params, data: Path, progress: bool) -> tuple[list[str], list[str]]:
    sets = data / "ImageSets" / "Segmentation"
    if params.dataset == "garments":
        # As VOC classic: labels from the first (fine) scenes, the unlabeled rest of train_aug.
        from pipeline.acquire.split_lists import generated_split

        fine, pool = read_list(sets / "train.txt"), read_list(sets / "train_aug.txt")
        return generated_split(fine, pool, params.labeled, params.seed)
    if params.dataset == "embedded":
        return make_split(read_list(sets / "train.txt"), params.labeled, params.seed)
    fine = read_list(sets / "train.txt")
    pool = read_list(sets / "train_aug.txt") if params.dataset == "voc" else fine
    if params.data.split.source == "published":
        return _published(params, data, pool, progress)
    from pipeline.acquire.split_lists import generated_split

    labeled_pool = fine if params.data.split.family == "classic" else pool
    return generated_split(labeled_pool, pool, params.labeled, params.seed)
