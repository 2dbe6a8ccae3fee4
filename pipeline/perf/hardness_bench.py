"""Hardness cost: ours (`hardness_from_maps`) against an authors-style per-image routine.

The authors compute γ image by image in numpy: per image and direction a bincount confusion
matrix, a separate pass over the reference map per class to count its pixels, and a weighted
nansum. `authors_style_hardness` is that routine written from SPEC §2 (not their code), so the
comparison measures the method, and it doubles as an independent check of our values.

Inputs are probability tensors with spatial structure (low-resolution logits upsampled, the
teacher a perturbed student), so the maps have regions as real predictions do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from imas.hardness import confidence_maps, hardness, hardness_from_maps
from pipeline.perf.timing import time_call

# (batch, classes, side): VOC's 513 crop with 21 classes, Cityscapes' 769 crop with 19.
PAPER_SHAPES: tuple[tuple[int, int, int], ...] = ((16, 21, 513), (16, 19, 769))


def authors_style_hardness(
    student_map: np.ndarray,
    teacher_map: np.ndarray,
    student_ratio: np.ndarray,
    teacher_ratio: np.ndarray,
    num_classes: int,
    ignore_index0: bool = True,
) -> np.ndarray:
    """γ per image, one image and one direction at a time (the per-image definition)."""
    c = num_classes
    gammas = []
    for s, t, rho_s, rho_t in zip(
        student_map, teacher_map, student_ratio, teacher_ratio, strict=True
    ):
        s, t = s.ravel().astype(np.int64), t.ravel().astype(np.int64)
        wiou = {}
        for name, ref, other in (("teacher", t, s), ("student", s, t)):
            confusion = np.bincount(ref * c + other, minlength=c * c).reshape(c, c)
            inter = np.diag(confusion)
            union = confusion.sum(axis=0) + confusion.sum(axis=1) - inter
            counts = np.array([np.count_nonzero(ref == k) for k in range(c)], dtype=np.float64)
            if ignore_index0:
                counts[0] = 0
            with np.errstate(divide="ignore", invalid="ignore"):
                iou = inter / union  # 0/0 for classes absent from both maps: NaN, dropped below
                weights = counts / counts.sum()  # all NaN when ref has no counted class: 0
            wiou[name] = np.nansum(weights * iou)
        gammas.append(1.0 - 0.5 * (rho_t * wiou["teacher"] + rho_s * wiou["student"]))
    return np.asarray(gammas, dtype=np.float64)


def structured_probs(batch: int, classes: int, side: int, seed: int) -> tuple[Tensor, Tensor]:
    """Student and teacher softmax probabilities `[B, C, side, side]` with region structure."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, classes, max(2, side // 32), max(2, side // 32), generator=g)
    logits = F.interpolate(3 * coarse, size=(side, side), mode="bilinear", align_corners=False)
    student = torch.softmax(logits, dim=1)
    noise = F.interpolate(
        torch.randn(coarse.shape, generator=g), size=(side, side), mode="bilinear"
    )
    teacher = torch.softmax(logits + noise, dim=1)
    return student, teacher


def bench_shape(
    batch: int, classes: int, side: int, repeats: int, tau: float = 0.8, seed: int = 0
) -> dict[str, Any]:
    """Timings (ms) and the largest |ours − authors-style| on one shape."""
    p_s, p_t = structured_probs(batch, classes, side, seed)
    s_map, s_ratio = confidence_maps(p_s, tau)
    t_map, t_ratio = confidence_maps(p_t, tau)
    ours = hardness_from_maps(s_map, t_map, s_ratio, t_ratio, classes)
    arrays = [x.numpy() for x in (s_map, t_map, s_ratio.double(), t_ratio.double())]
    reference = authors_style_hardness(arrays[0], arrays[1], arrays[2], arrays[3], classes)
    first = time_call(lambda: (confidence_maps(p_s, tau), confidence_maps(p_t, tau)), repeats)
    maps_ours = time_call(
        lambda: hardness_from_maps(s_map, t_map, s_ratio, t_ratio, classes), repeats
    )
    maps_authors = time_call(
        lambda: authors_style_hardness(arrays[0], arrays[1], arrays[2], arrays[3], classes), repeats
    )
    end_to_end = time_call(lambda: hardness(p_s, p_t, tau), repeats)
    return {
        "batch": batch,
        "classes": classes,
        "side": side,
        "max_abs_diff": float(np.abs(ours.double().numpy() - reference).max()),
        "mean_gamma": round(float(ours.mean()), 4),
        "first_step": first,
        "authors_style": maps_authors,
        "ours": maps_ours,
        "speedup": round(maps_authors["min_ms"] / maps_ours["min_ms"], 2),
        "end_to_end": end_to_end,
    }
