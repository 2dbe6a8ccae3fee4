"""Pascal VOC 2012 + SBD to the training layout (`SegmentationClassAug`, the "aug" split lists).

The semi-supervised VOC benchmark trains on train_aug: VOC 2012 train plus the SBD images
(Hariharan et al.), minus VOC val, 10,582 ids; it evaluates on the 1,449 VOC val images with
the official masks. This module downloads both archives and writes one VOC-layout root:

    out_root/JPEGImages/<id>.jpg
    out_root/SegmentationClassAug/<id>.png      index PNG, 0..20 and 255 (ignore)
    out_root/ImageSets/Segmentation/{train_aug,train,val}.txt

so `imas.data.datasets` reads it with `layout=VOC_AUG_LAYOUT`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from imas.data import DataError
from imas.data.catalogue import IGNORE_INDEX, VOC_CLASSES
from imas.data.layout import voc_palette
from imas.data.splits import read_list, write_list
from pipeline.acquire.fetch import download, safe_extract

VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
VOC_MD5 = "6cd6e144f989b92b3379bac3b3de84fd"
SBD_URL = (
    "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/"
    "benchmark.tgz"
)
SBD_MD5 = "82b4d87ceb2ed10f6038a1cba92111cb"

NUM_CLASSES = len(VOC_CLASSES)
# Sizes on the real data, for callers that want to check a finished build.
TRAIN_AUG_SIZE, TRAIN_SIZE, VAL_SIZE = 10_582, 1_464, 1_449


@dataclass(frozen=True)
class Source:
    """One archive: its mirrors, checksum, file name and the data folder inside it."""

    urls: tuple[str, ...]
    md5: str
    filename: str
    subdir: str


VOC_SOURCE = Source((VOC_URL,), VOC_MD5, "VOCtrainval_11-May-2012.tar", "VOCdevkit/VOC2012")
SBD_SOURCE = Source((SBD_URL,), SBD_MD5, "benchmark.tgz", "benchmark_RELEASE/dataset")


def fetch_voc_sbd(
    raw_dir: Path,
    *,
    voc: Source = VOC_SOURCE,
    sbd: Source = SBD_SOURCE,
    progress: bool = False,
) -> tuple[Path, Path]:
    """Download and extract VOC 2012 trainval and SBD under `raw_dir`; return both data roots.

    An already extracted root is reused without touching the network (extraction is
    all-or-nothing, so an existing root is complete). The archives stay in `raw_dir`; delete
    them to save ~3.4 GB once the roots exist.
    """
    roots = []
    for src in (voc, sbd):
        root = raw_dir / src.subdir
        if not root.is_dir():
            archive = download(src.urls, raw_dir / src.filename, md5=src.md5, progress=progress)
            safe_extract(archive, raw_dir, progress=progress)
            if not root.is_dir():
                raise DataError(f"{archive}: has no {src.subdir}/ folder")
        roots.append(root)
    return roots[0], roots[1]


def _check_values(arr: np.ndarray, path: Path) -> np.ndarray:
    present = np.unique(arr)
    bad = present[(present >= NUM_CLASSES) & (present != IGNORE_INDEX)]
    if arr.ndim != 2 or bad.size:
        what = f"shape {arr.shape}" if arr.ndim != 2 else f"values {bad.tolist()}"
        raise DataError(f"{path}: mask {what}; expected HxW with 0..{NUM_CLASSES - 1} and 255")
    return arr.astype(np.uint8)


def read_voc_mask(path: Path) -> np.ndarray:
    """A VOC SegmentationClass PNG as its palette indices (uint8 HxW, 255 = border/ignore).

    The indices are the labels; converting to RGB and mapping colours back would only add a
    way to get them wrong.
    """
    try:
        with Image.open(path) as img:
            mode, arr = img.mode, np.asarray(img)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable VOC mask ({e})") from e
    if mode not in ("P", "L"):
        raise DataError(f"{path}: VOC mask must be a palette PNG, got mode {mode}")
    return _check_values(arr, path)


def read_sbd_mask(path: Path) -> np.ndarray:
    """An SBD `cls/<id>.mat` (struct GTcls, field Segmentation) as uint8 HxW class indices."""
    if not path.is_file():  # loadmat's own message for this is misleading
        raise DataError(f"{path}: SBD mask not found")
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False, appendmat=False)
        arr = np.asarray(mat["GTcls"].Segmentation)
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
        raise DataError(f"{path}: unreadable SBD mask, expected GTcls.Segmentation ({e})") from e
    if arr.dtype.kind not in "ui":
        raise DataError(f"{path}: SBD mask has dtype {arr.dtype}, expected integers")
    return _check_values(arr, path)


def _locate(root: Path, subdir: str, marker: str) -> Path:
    """Accept either the data folder itself or the folder the archive was extracted into."""
    for cand in (root, root / subdir):
        if (cand / marker).exists():
            return cand
    raise DataError(f"{root}: neither it nor {root / subdir} contains {marker}")


def _place_image(src: Path, dst: Path) -> bool:
    """Hard-link (no extra disk, and a real file DVC can hash and cache) or copy when the
    filesystems differ. A symlink would tie the output to the raw tree's location. True if
    linked."""
    try:
        os.link(src, dst)
        return True
    except OSError:
        shutil.copyfile(src, dst)
        return False


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{path}: unreadable image ({e})") from e


def build_segmentation_aug(
    voc_root: Path, sbd_root: Path, out_root: Path, *, progress: bool = False
) -> dict[str, int]:
    """Write the train_aug/val training root from VOC 2012 and SBD (layout in the module doc).

    train_aug = (SBD train ∪ SBD val ∪ VOC train) − VOC val; lists are sorted. A mask comes
    from VOC's SegmentationClass when VOC has one (it marks object borders 255, SBD does not),
    otherwise from SBD; val masks must be VOC's. The root is built in a temporary sibling and
    renamed into place, replacing an existing `out_root`, so a failure leaves no partial root.
    Returns counts: train_aug, train, val, masks_voc, masks_sbd, images_linked, images_copied.
    """
    voc = _locate(Path(voc_root), VOC_SOURCE.subdir, "ImageSets/Segmentation/val.txt")
    sbd = _locate(Path(sbd_root), SBD_SOURCE.subdir, "cls")
    out_root = Path(out_root)
    voc_train = read_list(voc / "ImageSets/Segmentation/train.txt")
    voc_val = read_list(voc / "ImageSets/Segmentation/val.txt")
    sbd_ids = set(read_list(sbd / "train.txt")) | set(read_list(sbd / "val.txt"))
    val_set = set(voc_val)
    train_aug = sorted((sbd_ids | set(voc_train)) - val_set)
    val = sorted(voc_val)
    counts = dict.fromkeys(["masks_voc", "masks_sbd", "images_linked", "images_copied"], 0)

    out_root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_root.parent, prefix=f".{out_root.name}.build-"))
    try:
        img_dir, mask_dir = tmp / "JPEGImages", tmp / "SegmentationClassAug"
        img_dir.mkdir()
        mask_dir.mkdir()
        palette = voc_palette()
        for i in tqdm(train_aug + val, desc="VOC aug masks", unit="img", disable=not progress):
            voc_png = voc / "SegmentationClass" / f"{i}.png"
            if voc_png.is_file():
                mask, key = read_voc_mask(voc_png), "masks_voc"
            elif i in val_set:
                raise DataError(f"{voc_png}: VOC val id {i!r} has no mask")
            else:
                mask, key = read_sbd_mask(sbd / "cls" / f"{i}.mat"), "masks_sbd"
            counts[key] += 1
            image = voc / "JPEGImages" / f"{i}.jpg"
            if not image.is_file():  # SBD's own copy, in case a VOC release lacks the image
                image = sbd / "img" / f"{i}.jpg"
            if not image.is_file():
                raise DataError(f"{voc / 'JPEGImages'}: no image for id {i!r} (nor in SBD img/)")
            if _image_size(image) != mask.shape:
                raise DataError(
                    f"{image}: size {_image_size(image)} differs from mask {mask.shape}"
                )
            out = Image.fromarray(mask)
            out.putpalette(palette)
            out.save(mask_dir / f"{i}.png")
            linked = _place_image(image, img_dir / f"{i}.jpg")
            counts["images_linked" if linked else "images_copied"] += 1
        lists = tmp / "ImageSets" / "Segmentation"
        write_list(lists / "train_aug.txt", train_aug)
        write_list(lists / "train.txt", sorted(voc_train))
        write_list(lists / "val.txt", val)
        old = None
        if out_root.exists():
            old = Path(tempfile.mkdtemp(dir=out_root.parent, prefix=f".{out_root.name}.old-"))
            os.replace(out_root, old / "x")
        os.replace(tmp, out_root)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"train_aug": len(train_aug), "train": len(voc_train), "val": len(val), **counts}
