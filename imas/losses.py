"""Supervised and easiness-weighted unsupervised losses (SPEC §1, §5)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = 255


def supervised_loss(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Pixel cross-entropy averaged over the labeled pixels (255 = ignore)."""
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


def unsupervised_loss(
    student_logits: Tensor,
    pseudo_labels: Tensor,
    confidence: Tensor,
    threshold: float,
    weights: Tensor | None = None,
) -> Tensor:
    """ℓ = (1/B) Σ_i w_i · (1/HW) Σ_j 1[conf_ij ≥ τ] · CE(logits_ij, ŷ_ij).

    The per-image mean runs over all H·W pixels, masked ones counting as zero: dividing by the
    kept pixels instead would be a deviation from the released code. Weights (easiness) and
    targets carry no gradient. `weights=None` means every image weighs 1.
    """
    ce = F.cross_entropy(student_logits, pseudo_labels.detach(), reduction="none")
    keep = (confidence.detach() >= threshold).to(ce.dtype)
    per_image = (ce * keep).flatten(1).mean(dim=1)
    if weights is not None:
        per_image = per_image * weights.detach().to(ce.dtype)
    return per_image.mean()
