"""Supervised (plain or OHEM) and easiness-weighted unsupervised losses (SPEC §1, §5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from imas.data.catalogue import IGNORE_INDEX


def supervised_loss(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Pixel cross-entropy averaged over the labeled pixels (255 = ignore)."""
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


def ohem_loss(
    logits: Tensor,
    target: Tensor,
    thresh: float = 0.7,
    min_kept: int = 100000,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Cross-entropy over the hard pixels of the batch (U2PL's `OhemCrossEntropy2dTensor`).

    A labeled pixel is hard when the softmax probability of its true class is ≤ the threshold
    max(thresh, p_(min_kept)), p_(k) the k-th smallest such probability in the batch: all pixels
    below `thresh`, and at least the `min_kept` hardest (ties may add more). With fewer than
    `min_kept` labeled pixels every labeled pixel counts, as in U2PL. The loss is the mean over
    the kept pixels; the selection carries no gradient.
    """
    if min_kept < 1:
        # U2PL skips the selection entirely for min_kept = 0; refusing avoids that surprise.
        raise ValueError(f"min_kept={min_kept} must be ≥ 1")
    with torch.no_grad():
        valid = target != ignore_index
        n_valid = int(valid.sum())
        if n_valid > 0 and min_kept <= n_valid:
            safe = target.masked_fill(~valid, 0).unsqueeze(1)
            p_true = F.softmax(logits.detach(), dim=1).gather(1, safe).squeeze(1)
            kth = torch.kthvalue(p_true[valid], min_kept).values.item()
            hard = p_true <= max(thresh, kth)
            target = target.masked_fill(~(valid & hard), ignore_index)
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


def unsupervised_loss(
    student_logits: Tensor,
    pseudo_labels: Tensor,
    confidence: Tensor,
    threshold: float,
    weights: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """ℓ = (1/B) Σ_i w_i · (1/HW) Σ_j 1[conf_ij ≥ τ ∧ ŷ_ij ≠ 255] · CE(logits_ij, ŷ_ij).

    The per-image mean runs over all H·W pixels, masked ones counting as zero: dividing by the
    kept pixels instead would be a deviation from the released code. A pseudo-label of
    `ignore_index` (padding, a user's own masking) is masked like an unconfident pixel, as in
    the authors' `compute_unsupervised_loss_by_threshold`, which writes 255 into its target in
    place; here the caller's tensors are never modified. Weights (easiness) and targets carry no
    gradient. `weights=None` means every image weighs 1.
    """
    pseudo_labels = pseudo_labels.detach()
    keep = (confidence.detach() >= threshold) & (pseudo_labels != ignore_index)
    target = pseudo_labels.masked_fill(~keep, ignore_index)  # a new tensor
    ce = F.cross_entropy(student_logits, target, ignore_index=ignore_index, reduction="none")
    per_image = ce.flatten(1).mean(dim=1)
    if weights is not None:
        per_image = per_image * weights.detach().to(ce.dtype)
    return per_image.mean()
