"""Instance hardness γ: class-weighted, teacher–student symmetric IoU (SPEC §2).

For each unlabeled image the student's and the teacher's hard maps are compared:

    γ = 1 − ½ [ ρ_t · wIoU(z_t, z_s) + ρ_s · wIoU(z_s, z_t) ]

where ρ is the fraction of pixels a model predicts with confidence ≥ τ and wIoU(ref, other) weighs
each class's IoU by its pixel share in `ref`. Easiness e = 1 − γ drives every adaptive part.

The whole batch is one bincount over B·C² bins (a per-image confusion matrix), so no Python loop
runs over images or classes.
"""

from __future__ import annotations

import torch
from torch import Tensor


def confident_ratio(confidence: Tensor, threshold: float) -> Tensor:
    """ρ per image: the fraction of pixels whose max probability `[B, H, W]` is ≥ τ."""
    return (confidence >= threshold).flatten(1).float().mean(dim=1)


def confidence_maps(probs: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Hard map (argmax over classes) and ratio of pixels with max probability ≥ τ, per image."""
    conf, label = probs.max(dim=1)
    return label, confident_ratio(conf, threshold)


def weighted_iou(confusion: Tensor, ignore_index0: bool = True) -> tuple[Tensor, Tensor]:
    """wIoU in both directions from per-image confusion matrices `[B, C, C]` (rows = map A).

    Returns (wIoU(A, B), wIoU(B, A)). Classes absent from both maps have zero weight in either
    direction, so they drop out instead of counting as 0 or 1.
    """
    confusion = confusion.to(torch.float64)
    inter = confusion.diagonal(dim1=1, dim2=2)
    count_a = confusion.sum(dim=2)
    count_b = confusion.sum(dim=1)
    union = count_a + count_b - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))

    def directed(count_ref: Tensor) -> Tensor:
        if ignore_index0:
            count_ref = count_ref.clone()
            count_ref[:, 0] = 0
        total = count_ref.sum(dim=1)
        # A reference map that is all class 0 has 0/0 weights; SPEC §2 sets its wIoU to 0.
        weighted = (count_ref * iou).sum(dim=1)
        return torch.where(total > 0, weighted / total.clamp(min=1), torch.zeros_like(total))

    return directed(count_a), directed(count_b)


# Pixels per slice when the student map is narrowed to the bins' dtype: small enough to stay in
# cache and to reuse one scratch buffer, large enough that the Python loop is a few iterations.
_SLICE = 1 << 20
# Neighbouring pixels of a segmentation map mostly fall in the same bin, and a histogram loop
# that increments one counter over and over waits on its own previous store. Counting columns
# w mod _LANES into separate copies of the histogram (summed afterwards) breaks that chain.
_LANES = 4


def _bin_dtype(n_bins: int) -> torch.dtype:
    # Bins run 0 .. n_bins - 1.
    if n_bins <= 1 << 15:
        return torch.int16
    return torch.int32 if n_bins <= 1 << 31 else torch.int64


def batch_confusion(rows: Tensor, cols: Tensor, num_classes: int) -> Tensor:
    """Per-image confusion matrices `[B, C, C]` (int64) of two label maps `[B, H, W]` with values
    in [0, C): entry [i, r, k] counts the pixels of image i where `rows` is r and `cols` is k.

    One bincount over the batch (B·C² bins per lane). The bin index is built in the narrowest
    integer type that holds every bin (int16 for VOC or Cityscapes batches up to 16 images): on
    CPU the cost is memory traffic and first-touch page faults of freshly allocated maps, not
    arithmetic, and a full int64 index map is 4× the bytes. `cols` is narrowed in cache-sized
    slices into one scratch buffer rather than as a second whole map, for the same reason.
    """
    b, c = rows.shape[0], num_classes
    per_lane = b * c * c
    dtype = _bin_dtype(_LANES * per_lane)
    device = rows.device
    bins = torch.empty(rows.shape, dtype=dtype, device=device)
    bins.copy_(rows).mul_(c)
    image = torch.arange(b, device=device, dtype=dtype).view(b, 1, 1) * (c * c)
    lane = (torch.arange(rows.shape[-1], device=device, dtype=dtype) % _LANES) * per_lane
    bins.add_(image + lane)
    flat, cols = bins.view(-1), cols.reshape(-1)
    scratch = torch.empty(min(_SLICE, flat.numel()), dtype=dtype, device=device)
    for start in range(0, flat.numel(), _SLICE):
        part = flat[start : start + _SLICE]
        part.add_(scratch[: part.numel()].copy_(cols[start : start + _SLICE]))
    counts = torch.bincount(flat, minlength=_LANES * per_lane)
    return counts.view(_LANES, b, c, c).sum(dim=0)


def hardness_from_maps(
    student_map: Tensor,
    teacher_map: Tensor,
    student_ratio: Tensor,
    teacher_ratio: Tensor,
    num_classes: int,
    ignore_index0: bool = True,
) -> Tensor:
    """γ per image from hard maps `[B, H, W]` (int) and confident-pixel ratios `[B]`."""
    if student_map.shape != teacher_map.shape or student_map.dim() != 3:
        raise ValueError(
            f"maps must both be [B, H, W]; got {tuple(student_map.shape)} and "
            f"{tuple(teacher_map.shape)}"
        )
    confusion = batch_confusion(teacher_map, student_map, num_classes)
    w_teacher, w_student = weighted_iou(confusion, ignore_index0)
    agreement = teacher_ratio.double() * w_teacher + student_ratio.double() * w_student
    return (1.0 - 0.5 * agreement).to(torch.float32)


def hardness(
    student_probs: Tensor, teacher_probs: Tensor, threshold: float, ignore_index0: bool = True
) -> Tensor:
    """γ per image from softmax probabilities `[B, C, H, W]` of student and teacher (SPEC §2)."""
    if student_probs.shape != teacher_probs.shape:
        raise ValueError(
            f"student and teacher probabilities differ in shape: {tuple(student_probs.shape)} vs "
            f"{tuple(teacher_probs.shape)}"
        )
    s_map, s_ratio = confidence_maps(student_probs, threshold)
    t_map, t_ratio = confidence_maps(teacher_probs, threshold)
    return hardness_from_maps(s_map, t_map, s_ratio, t_ratio, student_probs.shape[1], ignore_index0)


def easiness(
    student_probs: Tensor, teacher_probs: Tensor, threshold: float, ignore_index0: bool = True
) -> Tensor:
    """e = 1 − γ: how well the model already handles each image."""
    return 1.0 - hardness(student_probs, teacher_probs, threshold, ignore_index0)
