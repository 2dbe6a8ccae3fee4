"""Confusion matrix, per-class IoU and mIoU; whole-image evaluation of a model on a loader."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from tqdm import tqdm

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


@torch.no_grad()
def predict(model: nn.Module, images_uint8: Tensor) -> Tensor:
    """Argmax labels `[B, H, W]` of a batch of uint8 images, model in eval mode."""
    was_training = model.training
    model.eval()
    labels = model(normalize(images_uint8)).argmax(dim=1)
    model.train(was_training)
    return labels


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]] | Iterable[tuple[Tensor, Tensor, object]],
    num_classes: int,
    device: torch.device | str = "cpu",
    ignore_index: int = 255,
    progress: bool = False,
) -> dict:
    """Whole-image evaluation: accumulate one confusion matrix over the loader."""
    total = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    # leave=False: during training the bar of the fit loop stays the only lasting line.
    for batch in tqdm(batches, desc="evaluate", disable=not progress, leave=False):
        images, masks = batch[0].to(device), batch[1].to(device)
        total += confusion_matrix(predict(model, images), masks, num_classes, ignore_index)
    per_class, miou = iou(total)
    return {"miou": miou, "per_class_iou": per_class.tolist(), "confusion": total.cpu()}
