"""Datasets over a root whose files are found by a `Layout` (default: Pascal VOC's
`JPEGImages/<id>.jpg`, `SegmentationClass/<id>.png`).

The built-in dataset, VOC itself (`VOC_AUG_LAYOUT`) and Cityscapes (its own layout, in
pipeline.acquire.cityscapes) differ only in where files live, so the training loop needs no
per-dataset code. Every read is validated and failures raise `DataError` naming the file: a
corrupt or mislabelled mask otherwise surfaces much later as a CUDA assert or a silently wrong
mIoU.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from imas.config import AugConfig
from imas.data import DataError
from imas.data.catalogue import IGNORE_INDEX, VOC_LAYOUT
from imas.data.layout import Layout, check_listed, open_decoded
from imas.data.normalization import IMAGENET, Normalization
from imas.data.transforms import weak_transform


def read_image(path: Path | str) -> Tensor:
    """Decode an image file as uint8 RGB [3,H,W]; DataError naming the file on failure."""
    path = Path(path)
    img = open_decoded(path, "image")
    arr = np.asarray(img.convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def read_mask(path: Path | str, num_classes: int, size: tuple[int, int] | None = None) -> Tensor:
    """Decode a single-channel index mask as int64 [H,W].

    `size` is the expected (H, W), normally the image's. Values must be in 0..num_classes-1 or
    255 (ignore). An RGB colour mask is rejected rather than converted: guessing its palette
    would turn a data bug into wrong labels.
    """
    path = Path(path)
    img = open_decoded(path, "mask")
    if img.mode not in ("P", "L"):
        raise DataError(f"{path}: mask must be a single-channel index PNG, got mode {img.mode}")
    arr = np.asarray(img)
    if size is not None and arr.shape != tuple(size):
        raise DataError(f"{path}: mask size {arr.shape} differs from image size {tuple(size)}")
    present = np.unique(arr)
    bad = present[(present >= num_classes) & (present != IGNORE_INDEX)]
    if bad.size:
        raise DataError(
            f"{path}: mask values {bad.tolist()} outside 0..{num_classes - 1} and 255 (ignore)"
        )
    return torch.from_numpy(arr.astype(np.int64))


class _VOCBase(Dataset):
    def __init__(
        self,
        root: Path | str,
        ids: Sequence[str],
        *,
        with_masks: bool,
        num_classes: int = 0,
        cache: bool = False,
        layout: Layout = VOC_LAYOUT,
    ) -> None:
        self.root = Path(root)
        self.ids = list(ids)
        self.num_classes = num_classes
        self.with_masks = with_masks
        self.cache = cache
        self.layout = layout
        self._store: dict[int, tuple[Tensor, Tensor | None]] = {}
        # Fail at construction, not after an hour of training, when a listed file is missing.
        check_listed(self.root, self.ids, layout, with_masks)

    def _image_path(self, i: str) -> Path:
        return self.layout.image_path(self.root, i)

    def _mask_path(self, i: str) -> Path:
        return self.layout.mask_path(self.root, i)

    def __len__(self) -> int:
        return len(self.ids)

    def _load(self, index: int) -> tuple[Tensor, Tensor | None]:
        if index in self._store:
            return self._store[index]
        i = self.ids[index]
        image = read_image(self._image_path(i))
        mask = None
        if self.with_masks:
            height, width = image.shape[-2:]
            mask = read_mask(self._mask_path(i), self.num_classes, (height, width))
        if self.cache:
            self._store[index] = (image, mask)
        return image, mask


class LabeledDataset(_VOCBase):
    """(image uint8 [3,c,c], mask int64 [c,c]) with the weak transform when `aug` is given.

    With `aug=None` it returns the full untransformed image and mask (same sizes in the
    built-in dataset, so the default collate still works; use `ValDataset` for evaluation).
    Padding takes the colour of `norm`'s mean (`pad_fill`).
    """

    def __init__(
        self,
        root: Path | str,
        ids: Sequence[str],
        num_classes: int,
        aug: AugConfig | None,
        *,
        cache: bool = False,
        layout: Layout = VOC_LAYOUT,
        norm: Normalization = IMAGENET,
    ) -> None:
        super().__init__(
            root, ids, with_masks=True, num_classes=num_classes, cache=cache, layout=layout
        )
        self.aug = aug
        self.norm = norm

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, mask = self._load(index)
        assert mask is not None
        if self.aug is None:
            return image.clone(), mask.clone()
        image, mask = weak_transform(image, mask, self.aug, self.norm.mean)
        assert mask is not None
        return image, mask


class ValDataset(_VOCBase):
    """(image uint8 [3,H,W], mask int64 [H,W], id): full-size, untransformed, for evaluation.

    The id rides along so per-image results and figures can name their image; a default
    collate turns the ids into a tuple of str. Images of different sizes (real VOC) need
    batch_size=1.
    """

    def __init__(
        self,
        root: Path | str,
        ids: Sequence[str],
        num_classes: int,
        *,
        cache: bool = False,
        layout: Layout = VOC_LAYOUT,
    ) -> None:
        super().__init__(
            root, ids, with_masks=True, num_classes=num_classes, cache=cache, layout=layout
        )

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, str]:
        image, mask = self._load(index)
        assert mask is not None
        return image.clone(), mask.clone(), self.ids[index]


class UnlabeledDataset(_VOCBase):
    """The weak view only, uint8 [3,c,c]; masks are never read (they may not exist).

    The strong view is made later on the device from this weak view (imas.intensity), so both
    views share the crop without shipping two images through the DataLoader.
    """

    def __init__(
        self,
        root: Path | str,
        ids: Sequence[str],
        aug: AugConfig,
        *,
        cache: bool = False,
        layout: Layout = VOC_LAYOUT,
        norm: Normalization = IMAGENET,
    ) -> None:
        super().__init__(root, ids, with_masks=False, cache=cache, layout=layout)
        self.aug = aug
        self.norm = norm

    def __getitem__(self, index: int) -> Tensor:
        image, _ = self._load(index)
        weak, _ = weak_transform(image, None, self.aug, self.norm.mean)
        return weak
