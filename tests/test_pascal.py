"""VOC 2012 + SBD to SegmentationClassAug: exact masks, the VOC-wins rule, train_aug arithmetic."""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image

from imas.data import DataError
from imas.data.datasets import read_mask
from imas.data.layout import voc_palette
from pipeline.acquire.pascal import (
    SBD_SOURCE,
    VOC_SOURCE,
    build_segmentation_aug,
    fetch_voc_sbd,
    read_sbd_mask,
    read_voc_mask,
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


def test_read_masks_exact(tmp_path) -> None:
    arr = voc_arr("x_13")
    _png(tmp_path / "v.png", arr)
    got = read_voc_mask(tmp_path / "v.png")
    assert got.dtype == np.uint8 and np.array_equal(got, arr) and got.max() == 255
    _mat(tmp_path / "s.mat", sbd_arr("x_05"))
    assert np.array_equal(read_sbd_mask(tmp_path / "s.mat"), sbd_arr("x_05"))
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match=r"rgb\.png.*mode RGB"):
        read_voc_mask(tmp_path / "rgb.png")
    scipy.io.savemat(tmp_path / "other.mat", {"GTinst": {"Segmentation": arr}})
    with pytest.raises(DataError, match=r"other\.mat.*GTcls\.Segmentation"):
        read_sbd_mask(tmp_path / "other.mat")
    with pytest.raises(DataError, match=r"none\.mat: SBD mask not found"):
        read_sbd_mask(tmp_path / "none.mat")


@pytest.mark.parametrize("kind", ["voc", "sbd"])
def test_out_of_range_value_names_file(tmp_path, kind) -> None:
    voc, sbd = make_raw(tmp_path / "raw")
    bad = voc_arr("x_00")
    bad[0, 0] = 21
    bad[0, 1] = 254
    if kind == "voc":
        path = voc / "SegmentationClass" / f"{VOC_TRAIN[0]}.png"
        _png(path, bad)
    else:
        path = sbd / "cls" / "2011_000004.mat"
        _mat(path, bad)
    with pytest.raises(DataError, match=rf"{path}: mask values \[21, 254\]"):
        build_segmentation_aug(voc, sbd, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no out_root, no temp dir


def test_build_from_archives_exact(tmp_path) -> None:
    make_raw(tmp_path / "src")
    arch = tmp_path / "mirror"
    arch.mkdir()
    sources = []
    for src, top in ((VOC_SOURCE, "VOCdevkit"), (SBD_SOURCE, "benchmark_RELEASE")):
        a = _archive(tmp_path / "src", top, arch / src.filename)
        md5 = hashlib.md5(a.read_bytes()).hexdigest()
        sources.append(replace(src, urls=(a.as_uri(),), md5=md5))
    raw = tmp_path / "raw"
    voc, sbd = fetch_voc_sbd(raw, voc=sources[0], sbd=sources[1])
    assert voc == raw / "VOCdevkit/VOC2012" and sbd == raw / "benchmark_RELEASE/dataset"
    # Extracted roots are reused: no download even though the mirrors are gone now.
    gone = [replace(s, urls=("http://127.0.0.1:9/gone",)) for s in sources]
    assert fetch_voc_sbd(raw, voc=gone[0], sbd=gone[1]) == (voc, sbd)

    out = tmp_path / "aug"
    (out / "stale").mkdir(parents=True)  # a previous build is replaced, not merged into
    # The parent folders work too: the data folders are found inside them.
    counts = build_segmentation_aug(raw, raw, out)
    assert counts == {
        "train_aug": 6,
        "train": 2,
        "val": 2,
        "masks_voc": 4,
        "masks_sbd": 4,
        "images_linked": 8,
        "images_copied": 0,
    }
    lists = out / "ImageSets/Segmentation"
    assert (lists / "train_aug.txt").read_text() == "\n".join(TRAIN_AUG)
    assert (lists / "val.txt").read_text() == "\n".join(VAL)
    assert (lists / "train.txt").read_text() == "2007_000005\n2008_000002"
    assert sorted(p.name for p in out.iterdir()) == [
        "ImageSets",
        "JPEGImages",
        "SegmentationClassAug",
    ]
    assert sorted(p.stem for p in (out / "SegmentationClassAug").iterdir()) == sorted(
        TRAIN_AUG + VAL
    )
    assert sorted(p.stem for p in (out / "JPEGImages").iterdir()) == sorted(TRAIN_AUG + VAL)
    for i in TRAIN_AUG + VAL:
        img = Image.open(out / "SegmentationClassAug" / f"{i}.png")
        assert img.mode == "P"
        # VOC wins where it has a mask (2008_000002 and 2007_000005 are in SBD too).
        want = voc_arr(i) if i in VOC_TRAIN + VOC_VAL else sbd_arr(i)
        assert np.array_equal(np.asarray(img), want), i
        assert np.array_equal(read_mask(out / "SegmentationClassAug" / f"{i}.png", 21), want)
        src = (sbd / "img" if i == SBD_ONLY_IMG else voc / "JPEGImages") / f"{i}.jpg"
        assert (out / "JPEGImages" / f"{i}.jpg").stat().st_ino == src.stat().st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aug", "mirror", "raw", "src"]


def test_build_errors(tmp_path) -> None:
    voc, sbd = make_raw(tmp_path / "raw")
    out = tmp_path / "out"
    (sbd / "cls" / "2009_000001.mat").unlink()
    with pytest.raises(DataError, match=r"cls/2009_000001\.mat: SBD mask not found"):
        build_segmentation_aug(voc, sbd, out)
    _mat(sbd / "cls" / "2009_000001.mat", sbd_arr("2009_000001"))
    (voc / "SegmentationClass" / f"{VOC_VAL[0]}.png").unlink()
    with pytest.raises(DataError, match=rf"VOC val id '{VOC_VAL[0]}' has no mask"):
        build_segmentation_aug(voc, sbd, out)
    _png(voc / "SegmentationClass" / f"{VOC_VAL[0]}.png", voc_arr(VOC_VAL[0]))
    _jpeg(voc / "JPEGImages" / "2007_000010.jpg", 1, size=(H + 1, W))
    with pytest.raises(DataError, match=r"2007_000010\.jpg: size \(7, 8\) differs from mask"):
        build_segmentation_aug(voc, sbd, out)
    (sbd / "val.txt").unlink()
    with pytest.raises(DataError, match=r"val\.txt: id list not found"):
        build_segmentation_aug(voc, sbd, out)
    with pytest.raises(DataError, match=r"contains cls"):
        build_segmentation_aug(voc, tmp_path, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
