"""Encoder pretraining by garment classification: the built-in stand-in for ImageNet weights
(the `pretrain` stage, pipeline/stages/pretrain.py).

The images are the scenes' own kind (`pipeline.acquire.garments.render_crops`: one
Fashion-MNIST garment from the pretraining pool, drawn as the scenes draw it, on a crop of the
bundled photos), so the encoder learns the garments and the photo clutter the segmentation
scenes show, and never a glyph any scene uses. A linear head
on the globally pooled high-level feature is trained with the backbone and then dropped: what
is kept is the backbone's state dict, which `imas.weights.load_backbone_weights` loads strictly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from imas.data.transforms import normalize


class GlyphClassifier(nn.Module):
    """The segmentation backbone, global average pooling of its high-level feature, a linear
    layer: ImageNet classification in miniature."""

    def __init__(self, backbone: nn.Module, high_channels: int, classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(high_channels, classes)

    def forward(self, x: Tensor) -> Tensor:
        _, high = self.backbone(x)
        return self.head(high.mean(dim=(2, 3)))


def pretrain_backbone(
    backbone: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    classes: int,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    log: Callable[[dict[str, float], int], None] = lambda metrics, epoch: None,
    progress: bool = False,
) -> list[dict[str, float]]:
    """Train `backbone` (in place; it must have `high_channels`) to classify `images` (uint8
    `[N, 3, H, W]`) by `labels`.

    SGD with momentum 0.9 and a poly schedule (power 0.9) over every iteration, shuffled
    batches with random horizontal flips, both from a generator seeded by `seed`, so a CPU run
    gives the same weights twice. Returns one row per epoch: mean loss and training accuracy.
    """
    if not 1 <= batch_size <= len(images):
        raise ValueError(f"batch_size={batch_size} must be in 1..{len(images)} (the images)")
    if epochs < 1:
        raise ValueError(f"epochs={epochs} must be >= 1")
    generator = torch.Generator().manual_seed(seed)
    high_channels = int(cast(int, backbone.high_channels))
    model = GlyphClassifier(backbone, high_channels, classes).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps = len(images) // batch_size
    total, history = epochs * steps, []
    bar = tqdm(total=total, desc="pretrain", disable=not progress, mininterval=1.0)
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        loss_sum, right = 0.0, 0
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = lr * (1 - (epoch * steps + step) / total) ** 0.9
            idx = order[step * batch_size : (step + 1) * batch_size]
            x = images[idx]
            flip = torch.rand(len(idx), generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            logits = model(normalize(x))
            loss = F.cross_entropy(logits, labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach())
            right += int((logits.argmax(1) == labels[idx]).sum())
            bar.update(1)
        row = {"loss": loss_sum / steps, "accuracy": right / (steps * batch_size)}
        history.append(row)
        log(row, epoch)
    bar.close()
    return history
