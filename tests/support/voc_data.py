"""VOC 2012 and SBD as the tests build them: tiny archives in the official layouts, masks exact."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

from imas.data.layout import voc_palette
from pipeline.acquire.pascal import (
    SBD_SOURCE,
    VOC_SOURCE,
)

H, W = 6, 8


# VOC train / val; SBD train / val (SBD overlaps both VOC sets, as on the real data).
VOC_TRAIN = ["2008_000002", "2007_000005"]


VOC_VAL = ["2007_000009", "2007_000003"]


SBD_TRAIN = ["2009_000001", "2008_000002", "2007_000009", "2007_000010"]


SBD_VAL = ["2011_000004", "2007_000005", "2010_000007"]


SBD_ONLY_IMG = "2010_000007"  # its JPEG is only in SBD's img/, not in VOC's JPEGImages


TRAIN_AUG = ["2007_000005", "2007_000010", "2008_000002", "2009_000001", "2010_000007"]


TRAIN_AUG += ["2011_000004"]


VAL = ["2007_000003", "2007_000009"]


def _n(i: str) -> int:
    return int(i[-2:])


def voc_arr(i: str) -> np.ndarray:
    a = np.full((H, W), _n(i) % 21, np.uint8)
    a[2:4, 3:6] = 20
    a[1, :] = 255  # object border
    return a


def sbd_arr(i: str) -> np.ndarray:
    a = np.zeros((H, W), np.uint8)
    a[:, : _n(i) % W] = (_n(i) * 3) % 21
    a[-1, -1] = 20
    return a


def _jpeg(path: Path, seed: int, size: tuple[int, int] = (H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, format="JPEG")


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr)
    img.putpalette(voc_palette())
    img.save(path)


def _mat(path: Path, arr: np.ndarray) -> None:
    """The real SBD structure: GTcls with Boundaries (cell of sparse), Segmentation, Categories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bounds = np.empty((20, 1), dtype=object)
    for k in range(20):
        bounds[k, 0] = scipy.sparse.csc_matrix(arr == k + 1, dtype=float)
    present = np.unique(arr[(arr > 0) & (arr < 21)]).astype(np.uint8).reshape(-1, 1)
    gt = {"Boundaries": bounds, "Segmentation": arr, "CategoriesPresent": present}
    scipy.io.savemat(path, {"GTcls": gt})


def _write_list(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(ids) + "\n")  # the real lists end with a newline


def make_raw(raw: Path) -> tuple[Path, Path]:
    """VOC and SBD trees with the archives' real internal paths; returns the two data roots."""
    voc, sbd = raw / VOC_SOURCE.subdir, raw / SBD_SOURCE.subdir
    for i in VOC_TRAIN + VOC_VAL:
        _png(voc / "SegmentationClass" / f"{i}.png", voc_arr(i))
    for i in set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL) - {SBD_ONLY_IMG}:
        _jpeg(voc / "JPEGImages" / f"{i}.jpg", _n(i))
    _jpeg(voc / "JPEGImages" / "2012_000099.jpg", 99)  # detection-only image: not copied
    _write_list(voc / "ImageSets/Segmentation/train.txt", VOC_TRAIN)
    _write_list(voc / "ImageSets/Segmentation/val.txt", VOC_VAL)
    _write_list(voc / "ImageSets/Segmentation/trainval.txt", VOC_TRAIN + VOC_VAL)
    for i in SBD_TRAIN + SBD_VAL:
        _mat(sbd / "cls" / f"{i}.mat", sbd_arr(i))
        _jpeg(sbd / "img" / f"{i}.jpg", _n(i))
    _write_list(sbd / "train.txt", SBD_TRAIN)
    _write_list(sbd / "val.txt", SBD_VAL)
    return voc, sbd


def _archive(raw: Path, top: str, path: Path) -> Path:
    with tarfile.open(path, "w:gz" if path.suffix == ".tgz" else "w") as tar:
        tar.add(raw / top, arcname=top)
    return path
