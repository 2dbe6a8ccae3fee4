"""params.yaml shrunk so that a training stage takes a second or two (the stage-level tests)."""

from __future__ import annotations

from typing import Any

# The digit scenes: generated in a fraction of a second with no dataset files, so stage tests
# run on them; the garment scenes have tests of their own (test_garment_pipeline.py).
EMBEDDED = {
    "train_scenes": 16,
    "val_scenes": 6,
    "digits": [0, 1, 2, 3, 4],
    "size": 32,
    "digits_per_scene": [1, 3],
    "digit_size": [12, 20],
    "ignore_border": True,
}


def tiny(raw: dict[str, Any]) -> dict[str, Any]:
    raw["labeled"] = 4
    raw["dataset"] = "embedded"
    raw["data"]["embedded"] = dict(EMBEDDED)
    raw["data"]["embedded_seed"] = 0
    raw["data"].pop("garments", None)
    raw["pretrain"] = None
    raw["model"].update(num_classes=6, pretrained=None)
    raw["aug"]["crop"] = 32
    for section in ("warmup", "train"):
        raw[section].update(epochs=1, iters_per_epoch=2, batch_labeled=2, batch_unlabeled=2)
    raw["model"].update(width=4, aspp_channels=8, low_level_channels=4)
    # The default pipeline's runs beside iMAS: SupOnly (the warmup continued) and mean teacher.
    raw["ablations"] = {
        "supervised": {"method": "supervised"},
        "mean_teacher": {"method": "mean_teacher"},
    }
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
