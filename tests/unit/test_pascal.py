"""VOC 2012 + SBD to SegmentationClassAug: exact masks, the VOC-wins rule, train_aug arithmetic."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image
from support.voc_data import (
    SBD_ONLY_IMG,
    TRAIN_AUG,
    VAL,
    VOC_TRAIN,
    VOC_VAL,
    H,
    W,
    _archive,
    _jpeg,
    _mat,
    _png,
    make_raw,
    sbd_arr,
    voc_arr,
)

from imas.data import DataError
from imas.data.datasets import read_mask
from pipeline.acquire.pascal import (
    SBD_SOURCE,
    VOC_SOURCE,
    build_segmentation_aug,
    fetch_voc_sbd,
    read_sbd_mask,
    read_voc_mask,
)


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
