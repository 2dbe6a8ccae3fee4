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
from imas.data.transforms import normalize


def confusion_matrix(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255
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


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """First index of each window along one axis of `length >= window` pixels.

    Windows start every `stride` pixels; the last one is moved back to end at the border, so all
    windows are `window` long and together cover every pixel (as long as stride <= window).
    """
    if not 1 <= stride <= window <= length:
        raise ValueError(f"need 1 <= stride ({stride}) <= window ({window}) <= length ({length})")
    count = -(-(length - window) // stride) + 1  # ceil((length - window) / stride) + 1
    return [min(i * stride, length - window) for i in range(count)]


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
    model: nn.Module, images_uint8: Tensor, num_classes: int | None, window: int, stride: int
) -> Tensor:
    """Softmax probabilities `[B, C, H, W]` of uint8 images, summed over overlapping windows.

    The batch is normalised, zero-padded (after normalisation, i.e. with the mean colour) to at
    least `window` on each side, split evenly around the image, and cut into `window x window`
    tiles every `stride` pixels, the last tile of each row and column aligned to the border (see
    `window_starts`). Each tile's softmax is added into the map, which is then cropped back to
    the image. The sum is not divided by the per-pixel tile count: that does not change the
    argmax, and the division's rounding could only create ties. `num_classes` is checked
    against the model's output; None takes the model's. Model in eval mode.
    """
    was_training = model.training
    model.eval()
    x, top, left = _pad_to_window(normalize(images_uint8), window)
    b, _, h, w = x.shape
    total: Tensor | None = None
    for y0 in window_starts(h, window, stride):
        for x0 in window_starts(w, window, stride):
            logits = model(x[:, :, y0 : y0 + window, x0 : x0 + window])
            classes = num_classes if num_classes is not None else logits.shape[1]
            if logits.shape != (b, classes, window, window):
                raise ValueError(
                    f"model returned {tuple(logits.shape)} for a {window}x{window} tile, "
                    f"expected {(b, classes, window, window)}"
                )
            if total is None:
                total = torch.zeros(b, classes, h, w, dtype=logits.dtype, device=logits.device)
            total[:, :, y0 : y0 + window, x0 : x0 + window] += logits.softmax(dim=1)
    model.train(was_training)
    assert total is not None  # window_starts always yields at least one window
    height, width = images_uint8.shape[-2:]
    return total[:, :, top : top + height, left : left + width]


@torch.no_grad()
def predict(
    model: nn.Module,
    images_uint8: Tensor,
    mode: Literal["whole", "sliding"] = "whole",
    window: int | None = None,
    stride: int | None = None,
) -> Tensor:
    """Argmax labels `[B, H, W]` of a batch of uint8 images, model in eval mode.

    whole: one forward pass over the full image; sliding: the argmax of
    `sliding_probabilities` with `window` and `stride`.
    """
    _check_mode(mode, window, stride)
    if mode == "sliding":
        assert window is not None and stride is not None
        return sliding_probabilities(model, images_uint8, None, window, stride).argmax(dim=1)
    was_training = model.training
    model.eval()
    labels = model(normalize(images_uint8)).argmax(dim=1)
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
    ignore_index: int = 255,
    progress: bool = False,
    *,
    mode: Literal["whole", "sliding"] = "whole",
    window: int | None = None,
    stride: int | None = None,
    across_ranks: bool = False,
) -> dict:
    """Accumulate one confusion matrix over the loader: whole-image prediction, or `window`
    tiles every `stride` pixels with summed softmax (`sliding_probabilities`).

    `across_ranks`: each rank of a process group holds its own shard of the images (every
    image on exactly one rank); the confusion matrices are summed, so every rank returns the
    scores of the whole set.
    """
    _check_mode(mode, window, stride)
    total = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    # leave=False: during training the bar of the fit loop stays the only lasting line.
    for batch in tqdm(batches, desc="evaluate", disable=not progress, leave=False):
        images, masks = batch[0].to(device), batch[1].to(device)
        labels = predict(model, images, mode, window, stride)
        total += confusion_matrix(labels, masks, num_classes, ignore_index)
    if across_ranks:
        distributed.all_reduce_sum(total)
    per_class, miou = iou(total)
    return {"miou": miou, "per_class_iou": per_class.tolist(), "confusion": total.cpu()}
