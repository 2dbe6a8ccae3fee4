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
    b, c = student_map.shape[0], num_classes
    offsets = torch.arange(b, device=student_map.device).view(b, 1) * (c * c)
    bins = offsets + teacher_map.flatten(1).long() * c + student_map.flatten(1).long()
    confusion = torch.bincount(bins.flatten(), minlength=b * c * c).view(b, c, c)
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
