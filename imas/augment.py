"""Model-adaptive perturbations of the unlabeled batch (SPEC §3–4).

- `mix_views`: û_s = e ⊙ u_s + (1 − e) ⊙ u_w per image, so hard images stay near the weak view;
  `sample_views`, the authors' other variant: the strong view with probability e, else the weak.
- `cutmix_partner` / `cutmix_boxes` / `cutmix`: the batch is sorted by easiness and the easiest
  image trades a box with the hardest, on the weak views, carrying the teacher's pseudo-labels and
  confidences along (pasted, not recomputed). The result is a separate third view.

The strong intensity ops themselves live in `imas.intensity`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


def mix_views(strong: Tensor, weak: Tensor, easiness: Tensor) -> Tensor:
    """Per-image convex mix of normalised strong and weak views, weighted by easiness `[B]`."""
    e = easiness.to(strong.dtype).view(-1, *([1] * (strong.dim() - 1)))
    return e * strong + (1.0 - e) * weak


def sample_views(
    strong: Tensor, weak: Tensor, easiness: Tensor, generator: torch.Generator
) -> Tensor:
    """Per image the strong view with probability e_i, else the weak view (the authors'
    `flag_augs_mixup_by_hard: False`); one U(0,1) draw per image from `generator`."""
    take = torch.rand(easiness.shape[0], generator=generator) < easiness.detach().cpu()
    take = take.to(strong.device).view(-1, *([1] * (strong.dim() - 1)))
    return torch.where(take, strong, weak)


def cutmix_partner(easiness: Tensor) -> Tensor:
    """Index each image receives its box from: ascending rank r ↔ rank B−1−r.

    With odd B the median image is its own partner. Ties keep batch order (stable sort), so the
    pairing is deterministic.
    """
    order = torch.sort(easiness, stable=True).indices
    partner = torch.empty_like(order)
    partner[order] = order.flip(0)
    return partner


def random_partner(batch: int, generator: torch.Generator) -> Tensor:
    """Random pairing for the fixed-probability CutMix ablation (a random permutation)."""
    return torch.randperm(batch, generator=generator)


def cutmix_boxes(batch: int, height: int, width: int, generator: torch.Generator) -> Tensor:
    """Boolean box masks `[B, H, W]`: one side ratio v ~ U(0.1, 0.9) for the batch, box
    int(H·v) × int(W·v) centred at a per-image random centre (row in [H/16, H), column in
    [W/16, W)), clipped to the image."""
    v = 0.1 + 0.8 * torch.rand((), generator=generator).item()
    box_h, box_w = int(height * v), int(width * v)
    rows = torch.randint(height // 16, height, (batch,), generator=generator)
    cols = torch.randint(width // 16, width, (batch,), generator=generator)
    top = (rows - box_h // 2).view(-1, 1)
    left = (cols - box_w // 2).view(-1, 1)
    r = torch.arange(height).view(1, -1)
    c = torch.arange(width).view(1, -1)
    in_rows = (r >= top) & (r < top + box_h)
    in_cols = (c >= left) & (c < left + box_w)
    return in_rows[:, :, None] & in_cols[:, None, :]


class CutMixView(NamedTuple):
    images: Tensor
    labels: Tensor
    confidence: Tensor


def cutmix(
    images: Tensor, labels: Tensor, confidence: Tensor, partner: Tensor, boxes: Tensor
) -> CutMixView:
    """Paste, inside image i's box, the pixels, pseudo-labels and confidences of partner[i]."""
    boxes = boxes.to(images.device)
    partner = partner.to(images.device)
    mixed_images = torch.where(boxes[:, None], images[partner], images)
    mixed_labels = torch.where(boxes, labels[partner], labels)
    mixed_conf = torch.where(boxes, confidence[partner], confidence)
    return CutMixView(mixed_images, mixed_labels, mixed_conf)
