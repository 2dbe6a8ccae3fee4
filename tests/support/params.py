"""params.yaml shrunk so that a training stage takes a second or two: `tiny_params()` (the
repository's params, shrunk) is the builder every test uses; `tiny_real` and `tiny_garments`
adapt it to a real dataset's fixture root and to tiny garment scenes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from pipeline.config.params import Params

ROOT = Path(__file__).resolve().parents[2]

# The digit scenes: generated in a fraction of a second with no dataset files, so stage tests
# run on them; the garment scenes have tests of their own (test_garments.py,
# test_garment_dataset.py; test_pipeline_e2e.py and test_queue.py run dvc.yaml on tiny ones).
# The stages' default dataset root is data/garments whatever the dataset, so it holds the digit
# scenes in a tiny project.
EMBEDDED = {
    "train_scenes": 16,
    "val_scenes": 6,
    "digits": [0, 1, 2, 3, 4],
    "size": 32,
    "digits_per_scene": [1, 3],
    "digit_size": [12, 20],
    "ignore_border": True,
    "stroke": 0,
}


def tiny_params() -> dict[str, Any]:
    """The repository's params.yaml, shrunk by `tiny`."""
    return tiny(yaml.safe_load((ROOT / "params.yaml").read_text()))


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
        # An evaluation every epoch (root params evaluate every 8 / 20): the tests read a best
        # epoch and a history row per epoch.
        raw[section].update(
            epochs=1, iters_per_epoch=2, batch_labeled=2, batch_unlabeled=2, eval_every=1
        )
    raw["model"].update(width=4, aspp_channels=8, low_level_channels=4)
    # The default pipeline's runs beside iMAS: SupOnly (the warmup's supervised continuation)
    # and mean teacher.
    raw["ablations"] = {
        "supervised": {"method": "supervised"},
        "mean_teacher": {"method": "mean_teacher"},
    }
    raw["evaluate"].update(batch_size=6, figure_images=2)
    # No MLflow model per train run (1-2 s each): tests/stage/test_predict_command.py and
    # tests/system/test_serving.py switch it on.
    raw["runtime"].update(progress=False, threads=1, log_model=False)
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


# The default pipeline's runs beside iMAS, pinned so the test follows dvc.yaml, not edits of
# params.yaml's ablations: SupOnly (the warmup continued; the evaluate stage's baseline) and
# mean teacher.
ABLATIONS = {"supervised": {"method": "supervised"}, "mean_teacher": {"method": "mean_teacher"}}


def tiny_garments(raw: dict[str, Any]) -> dict[str, Any]:
    """The default params on tiny garment scenes, pretraining included."""
    raw["dataset"] = "garments"
    raw["labeled"] = 6
    raw["data"]["garments"].update(
        train_scenes=24, fine_scenes=12, val_scenes=6, tune_scenes=6, test_scenes=6, size=32
    )
    raw["pretrain"].update(crop=16, images=40, epochs=1, batch_size=8)
    raw["model"]["pretrained"] = "models/pretrained.pt"
    raw["aug"]["crop"] = 32
    for section in ("warmup", "train"):
        raw[section].update(epochs=2, iters_per_epoch=2, batch_labeled=4, batch_unlabeled=4)
    raw["model"].update(width=8, aspp_channels=16, low_level_channels=8)
    raw["ablations"] = ABLATIONS
    raw["evaluate"].update(batch_size=8, figure_images=2)
    raw["runtime"].update(progress=False, threads=1)
    return raw


def tiny_custom(
    raw: dict[str, Any],
    root: str,
    *,
    split: str = "draw",
    val: int | None = 4,
    normalize: str = "computed",
    labeled: int = 8,
) -> dict[str, Any]:
    """`tiny` for `dataset: custom` on the folder `root` (support/custom_data.py writes one):
    two classes, 32-pixel crops."""
    raw = tiny(raw)
    raw["dataset"] = "custom"
    raw["labeled"] = labeled
    for key in ("embedded", "embedded_seed"):
        raw["data"].pop(key, None)
    raw["data"]["custom"] = {
        "root": root,
        "images": "images",
        "masks": "masks",
        "classes": "classes.txt",
        "split": split,
        "val": val,
        "seed": 0,
        "normalize": normalize,
    }
    raw["model"]["num_classes"] = 2
    raw["aug"]["crop"] = 32
    return raw


def custom_params(root: Path | str, **options: Any) -> Params:
    """Validated tiny params on custom folder `root`; one masked image held out as val unless
    `options` say otherwise."""
    from pipeline.config.params import Params

    return Params.model_validate(tiny_custom(tiny_params(), str(root), **{"val": 1, **options}))
