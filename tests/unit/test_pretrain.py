"""Encoder pretraining by garment classification (issue 17): crops are pure functions of their
glyph, training learns a separable task and is deterministic, and the trained backbone loads
strictly into the segmentation model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imas.config import ModelConfig
from imas.model import build_model
from imas.pretrain import pretrain_backbone
from imas.weights import load_backbone_weights
from pipeline.acquire.embedded import load_photos
from pipeline.acquire.garments import render_crops

MODEL = ModelConfig(
    backbone="tiny", num_classes=11, width=8, aspp_channels=8, aspp_rates=(1, 2, 3),
    low_level_channels=4, output_stride=8, stem=None, multi_grid=None, pretrained=None,
    aux_head=False,
)  # fmt: skip


def two_shapes(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 0: a solid square; class 1: a plus sign (a shape task, in any colour)."""
    glyphs = np.zeros((n, 28, 28), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 2
    glyphs[labels == 0, 4:24, 4:24] = 220
    glyphs[labels == 1, 4:24, 12:16] = 220
    glyphs[labels == 1, 12:16, 4:24] = 220
    return glyphs, labels


def test_crops_are_pure_functions_of_their_glyph() -> None:
    glyphs, labels = two_shapes(6)
    photos = load_photos()
    images, classes = render_crops([4, 1, 2], glyphs, labels, photos, 32, seed=0)
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.uint8
    assert classes.tolist() == [0, 1, 0]
    again, _ = render_crops([2, 4], glyphs, labels, photos, 32, seed=0)
    assert torch.equal(again[1], images[0]) and torch.equal(again[0], images[2])  # order-free
    other, _ = render_crops([4], glyphs, labels, photos, 32, seed=1)
    assert not torch.equal(other[0], images[0])


def test_pretraining_learns_the_shapes_deterministically_and_loads_strictly() -> None:
    glyphs, labels = two_shapes(128)
    photos = load_photos()
    images, classes = render_crops(range(128), glyphs, labels, photos, 32, seed=0)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        backbone = build_model(MODEL).backbone
        start = {k: v.clone() for k, v in backbone.state_dict().items()}
        history = pretrain_backbone(
            backbone, images, classes, classes=2, epochs=20, batch_size=16, lr=0.1,
            weight_decay=1e-4, seed=0,
        )  # fmt: skip
        runs.append((history, backbone.state_dict()))
    history, state = runs[0]
    assert history[0]["accuracy"] < 0.75 and history[-1]["accuracy"] >= 0.9
    assert history[-1]["loss"] < history[0]["loss"]
    assert runs[1][0] == history  # the same numbers ...
    assert all(torch.equal(state[k], runs[1][1][k]) for k in state)  # ... and weights
    assert any(not torch.equal(state[k], start[k]) for k in state)
    # What is kept is a backbone state dict the segmentation model loads key for key.
    model = build_model(MODEL)
    load_backbone_weights(model.backbone, state)
    assert all(torch.equal(model.backbone.state_dict()[k], state[k]) for k in state)


def test_pretraining_refuses_a_batch_larger_than_the_data() -> None:
    backbone = build_model(MODEL).backbone
    images = torch.zeros(4, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"batch_size=8 must be in 1\.\.4"):
        pretrain_backbone(
            backbone, images, torch.zeros(4, dtype=torch.long), classes=2, epochs=1,
            batch_size=8, lr=0.1, weight_decay=0.0, seed=0,
        )  # fmt: skip
