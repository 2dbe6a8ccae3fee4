"""Networks for the export tests: random weights whose logits have a trained model's scale.

A freshly built model's BatchNorm layers have unit scale, running statistics of 0 and 1 that
match no activation, and the last BN of every residual branch at zero (zero-init residual), so
its logits stay below 0.2 and any exporter looks exact. Here every BN gets a random shift, a
scale in [0.5, 1.5] (the last BN of each residual branch one in [0, 0.25]: trained ResNets keep
those small, and at 1.5 a ResNet-101's activations grow block after block to logits over 100,
where float32 alone is 3e-3 off), and the running statistics of one random batch. ResNet-101
DeepLabV3+ then gives logits of a few units (6.6 at 129², seed 0), the scale of a trained one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from imas.config import ModelConfig
from imas.model import DeepLabV3Plus, build_model

RESIDUAL_SCALE = 0.25


def realistic(cfg: ModelConfig, seed: int = 0) -> DeepLabV3Plus:
    """`cfg`'s model, seeded, with the BatchNorm layers of the module docstring; in eval mode."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():
        # The zero-initialised ones: the last BN of each residual branch.
        branch_ends = {
            id(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d) and not m.weight.any()
        }
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                top = RESIDUAL_SCALE if id(m) in branch_ends else 1.5
                m.weight.uniform_(0.0 if id(m) in branch_ends else 0.5, top)
                m.bias.uniform_(-0.5, 0.5)
                m.momentum = None  # a cumulative average: after one batch, its statistics
                m.reset_running_stats()
        model.train()
        model(torch.randn(2, 3, 65, 65))
    return model.eval()


def write_training_checkpoint(path: Path, cfg: ModelConfig, model: nn.Module) -> Path:
    """A checkpoint as the training stages write it: the model config, and the best and last
    student and teacher. The teacher is the student with its classifier halved and the best
    student the last one with it doubled, so picking the wrong network shows in the logits."""
    student = {k: v.clone() for k, v in model.state_dict().items()}
    teacher = {**student, "classifier.weight": student["classifier.weight"] / 2}
    best_student = {**student, "classifier.weight": student["classifier.weight"] * 2}
    payload = {
        "model": cfg.model_dump(mode="json"),
        "method": "imas",
        "best": {"student": best_student, "teacher": teacher},
        "last": {"student": student, "teacher": teacher},
    }
    torch.save(payload, path)
    return path
