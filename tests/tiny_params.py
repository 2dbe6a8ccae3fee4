"""params.yaml shrunk so that a training stage takes a second or two (the stage-level tests)."""

from __future__ import annotations

from typing import Any


def tiny(raw: dict[str, Any]) -> dict[str, Any]:
    raw["labeled"] = 4
    raw["data"]["embedded"].update(train_scenes=16, val_scenes=6, size=32, digit_size=[12, 20])
    raw["aug"]["crop"] = 32
    for section in ("warmup", "train"):
        raw[section].update(epochs=1, iters_per_epoch=2, batch_labeled=2, batch_unlabeled=2)
    raw["model"].update(width=4, aspp_channels=8, low_level_channels=4)
    raw["ablations"] = {"mean_teacher": {"method": "mean_teacher"}}
    raw["evaluate"].update(batch_size=6, figure_images=2)
    raw["runtime"].update(progress=False, threads=1)
    return raw


def tiny_real(raw: dict[str, Any], dataset: str, num_classes: int) -> dict[str, Any]:
    """`tiny` for a real dataset's fixture root: one labeled image, 8-pixel crops, batch-1 val."""
    raw = tiny(raw)
    raw["dataset"] = dataset
    raw["labeled"] = 1
    raw["model"]["num_classes"] = num_classes
    raw["aug"]["crop"] = 8
    raw["evaluate"]["batch_size"] = 1
    return raw
