"""Confusion matrix, per-class IoU and mIoU; whole-image and sliding-window evaluation of a
model on a loader."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from imas import distributed
from imas.data.catalogue import IGNORE_INDEX
from imas.data.normalization import IMAGENET, Normalization
from imas.data.transforms import normalize


def confusion_matrix(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """`[C, C]` counts, rows = target class, columns = predicted class; ignored pixels skipped."""
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape"
        )
    keep = target != ignore_index
    t = target[keep].long()
    p = pred[keep].long()
    # An out-of-range value would not fail: t·C + p lands in another cell and the mIoU is
    # silently wrong (e.g. a model with more outputs than num_classes). Check both maps.
    for name, values in (("target", t), ("prediction", p)):
        bad = values[(values < 0) | (values >= num_classes)]
        if bad.numel():
            raise ValueError(f"{name} holds class {int(bad[0])} outside 0..{num_classes - 1}")
    bins = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return bins.view(num_classes, num_classes)


def iou(confusion: Tensor) -> tuple[Tensor, float]:
    """Per-class IoU (NaN for classes absent from both prediction and target) and their mean."""
    confusion = confusion.to(torch.float64)
    inter = confusion.diagonal()
    union = confusion.sum(dim=0) + confusion.sum(dim=1) - inter
    per_class = torch.where(
        union > 0, inter / union.clamp(min=1), torch.full_like(inter, torch.nan)
    )
    present = ~per_class.isnan()
    miou = float(per_class[present].mean()) if present.any() else float("nan")
    return per_class, miou


Tiling = Literal["clip", "shift"]


def clipped_windows(length: int, window: int, stride: int) -> list[tuple[int, int]]:
    """(start, stop) of each window along one axis, the authors' `validate_citys` tiling:
    windows start at 0, stride, 2·stride, … while inside the image, and one that crosses the
    border is cut there (edge windows are shorter; an image shorter than the window is one
    window). 1024 rows, 769 / 512: (0, 769), (512, 1024)."""
    if not 1 <= stride <= window:
        raise ValueError(f"need 1 <= stride ({stride}) <= window ({window})")
    if length < 1:
        raise ValueError(f"need a length >= 1, got {length}")
    return [(start, min(start + window, length)) for start in range(0, length, stride)]


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """First index of each full window along one axis of `length >= window` pixels (the
    `shift` tiling, as mmsegmentation's slide inference).

    Windows start every `stride` pixels; the last one is moved back to end at the border, so all
    windows are `window` long and together cover every pixel (as long as stride <= window).
    """
    if not 1 <= stride <= window <= length:
        raise ValueError(f"need 1 <= stride ({stride}) <= window ({window}) <= length ({length})")
    count = -(-(length - window) // stride) + 1  # ceil((length - window) / stride) + 1
    return [min(i * stride, length - window) for i in range(count)]


def tile_boxes(
    height: int, width: int, window: int, stride: int, tiling: Tiling
) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of every tile of a `height × width` map, row by row.

    clip: `clipped_windows` on each axis (the authors'); shift: full `window × window` tiles
    (`window_starts`), the map being at least `window` on each side (`sliding_probabilities`
    pads it first)."""
    if tiling == "clip":
        rows, cols = clipped_windows(height, window, stride), clipped_windows(width, window, stride)
    elif tiling == "shift":
        rows = [(y, y + window) for y in window_starts(height, window, stride)]
        cols = [(x, x + window) for x in window_starts(width, window, stride)]
    else:
        raise ValueError(f"tiling must be 'clip' or 'shift', got {tiling!r}")
    return [(y0, y1, x0, x1) for y0, y1 in rows for x0, x1 in cols]


def _pad_to_window(x: Tensor, window: int) -> tuple[Tensor, int, int]:
    """Zero-pad a normalised `[B, 3, H, W]` batch so both sides are at least `window`, split
    evenly (the odd pixel after: bottom / right); return it and the top and left offsets."""
    h, w = x.shape[-2:]
    pad_h, pad_w = max(window - h, 0), max(window - w, 0)
    top, left = pad_h // 2, pad_w // 2
    if pad_h or pad_w:
        x = F.pad(x, (left, pad_w - left, top, pad_h - top), mode="constant", value=0.0)
    return x, top, left


@torch.no_grad()
def sliding_probabilities(
    model: nn.Module,
    images_uint8: Tensor,
    num_classes: int | None,
    window: int,
    stride: int,
    tiling: Tiling = "clip",
    norm: Normalization = IMAGENET,
) -> Tensor:
    """Softmax probabilities `[B, C, H, W]` of uint8 images, summed over overlapping tiles.

    clip (the authors' `validate_citys`): tiles of at most `window × window` start every
    `stride` pixels and are cut at the image border, so edge tiles are smaller and nothing is
    padded. shift: the normalised batch is zero-padded (after normalisation, i.e. with the mean
    colour) to at least `window` on each side, split evenly around the image, every tile is a
    full `window × window`, the last of each row and column aligned to the border; the map is
    cropped back to the image. Each tile's softmax is added into the map. The sum is not divided
    by the per-pixel tile count (the authors do not either): that does not change the argmax,
    and the division's rounding could only create ties. `num_classes` is checked against the
    model's output; None takes the model's. Images are normalised by `norm`. Model in eval
    mode.
    """
    was_training = model.training
    model.eval()
    x, top, left = normalize(images_uint8, norm), 0, 0
    if tiling == "shift":
        x, top, left = _pad_to_window(x, window)
    b, _, h, w = x.shape
    total: Tensor | None = None
    for y0, y1, x0, x1 in tile_boxes(h, w, window, stride, tiling):
        logits = model(x[:, :, y0:y1, x0:x1])
        classes = num_classes if num_classes is not None else logits.shape[1]
        if logits.shape != (b, classes, y1 - y0, x1 - x0):
            raise ValueError(
                f"model returned {tuple(logits.shape)} for a {y1 - y0}x{x1 - x0} tile, "
                f"expected {(b, classes, y1 - y0, x1 - x0)}"
            )
        if total is None:
            total = torch.zeros(b, classes, h, w, dtype=logits.dtype, device=logits.device)
        total[:, :, y0:y1, x0:x1] += logits.softmax(dim=1)
    model.train(was_training)
    assert total is not None  # every tiling yields at least one tile
    height, width = images_uint8.shape[-2:]
    return total[:, :, top : top + height, left : left + width]


@torch.no_grad()
def predict(
    model: nn.Module,
    images_uint8: Tensor,
    mode: Literal["whole", "sliding"] = "whole",
    window: int | None = None,
    stride: int | None = None,
    tiling: Tiling = "clip",
    norm: Normalization = IMAGENET,
) -> Tensor:
    """Argmax labels `[B, H, W]` of a batch of uint8 images (normalised by `norm`), model in
    eval mode.

    whole: one forward pass over the full image; sliding: the argmax of
    `sliding_probabilities` with `window`, `stride` and `tiling`.
    """
    _check_mode(mode, window, stride)
    if mode == "sliding":
        assert window is not None and stride is not None
        probs = sliding_probabilities(model, images_uint8, None, window, stride, tiling, norm)
        return probs.argmax(dim=1)
    was_training = model.training
    model.eval()
    labels = model(normalize(images_uint8, norm)).argmax(dim=1)
    model.train(was_training)
    return labels


def _check_mode(mode: str, window: int | None, stride: int | None) -> None:
    if mode == "whole":
        if window is not None or stride is not None:
            raise ValueError(
                f"mode='whole' takes no window or stride, got window={window}, stride={stride}"
            )
    elif mode == "sliding":
        if window is None or stride is None:
            raise ValueError(
                f"mode='sliding' needs window and stride, got window={window}, stride={stride}"
            )
        if not 1 <= stride <= window:
            raise ValueError(f"mode='sliding' needs 1 <= stride ({stride}) <= window ({window})")
    else:
        raise ValueError(f"mode must be 'whole' or 'sliding', got {mode!r}")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]] | Iterable[tuple[Tensor, Tensor, object]],
    num_classes: int,
    device: torch.device | str = "cpu",
    ignore_index: int = IGNORE_INDEX,
    progress: bool = False,
    *,
    mode: Literal["whole", "sliding"] = "whole",
    window: int | None = None,
    stride: int | None = None,
    tiling: Tiling = "clip",
    across_ranks: bool = False,
    per_image: bool = False,
    norm: Normalization = IMAGENET,
) -> dict:
    """Accumulate one confusion matrix over the loader: whole-image prediction, or `window`
    tiles every `stride` pixels with summed softmax (`sliding_probabilities`, `tiling`).

    `across_ranks`: each rank of a process group holds its own shard of the images (every
    image on exactly one rank); the confusion matrices are summed, so every rank returns the
    scores of the whole set.

    `per_image`: also return "per_image", the `[N, C, C]` confusion matrix of every image in
    loader order (they sum to "confusion"), so intervals can be bootstrapped over images.
    `norm`: the statistics the images are normalised by (the dataset's).
    """
    _check_mode(mode, window, stride)
    if per_image and across_ranks:
        raise ValueError("per_image confusions are kept on one process; use across_ranks=False")
    total = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    images_cm: list[Tensor] = []
    # leave=False: during training the bar of the fit loop stays the only lasting line.
    for batch in tqdm(batches, desc="evaluate", disable=not progress, leave=False):
        images, masks = batch[0].to(device), batch[1].to(device)
        labels = predict(model, images, mode, window, stride, tiling, norm)
        if per_image:
            for pred, mask in zip(labels, masks, strict=True):
                cm = confusion_matrix(pred, mask, num_classes, ignore_index)
                images_cm.append(cm.cpu())
                total += cm
        else:
            total += confusion_matrix(labels, masks, num_classes, ignore_index)
    if across_ranks:
        distributed.all_reduce_sum(total)
    per_class, miou = iou(total)
    out = {"miou": miou, "per_class_iou": per_class.tolist(), "confusion": total.cpu()}
    if per_image:
        empty = torch.zeros(0, num_classes, num_classes, dtype=torch.int64)
        out["per_image"] = torch.stack(images_cm) if images_cm else empty
    return out
