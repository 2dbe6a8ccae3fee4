"""What a training stage measures besides its val curve, for the benchmark's verdict:

- `score_test`: the run's primary model (the last EMA teacher; SupOnly: the last student) on the
  test split, with one confusion matrix per image (`.npz`), so intervals can be bootstrapped
  over scenes and anyone can re-score from the files;
- `premise_hook`: at every evaluation, the easiness and pseudo-label mIoU of a fixed sample of
  unlabeled images (their ground truth read for this diagnostic only), and the epoch's Spearman
  correlation between the two.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imas.data.splits import read_list
from imas.evaluate import evaluate
from imas.model import build_model
from imas.premise import premise_rows, spearman
from imas.train import EvalHook, FitResult
from pipeline.config.params import Params
from pipeline.control.outputs import atomic_path
from pipeline.training.loaders import ids_loader, input_normalization, val_loader

# Unlabeled images the premise is measured on: evenly spaced over the unlabeled list, so the
# sample is fixed by the split alone.
PREMISE_SAMPLE = 512


def primary_weights(result: FitResult) -> dict[str, torch.Tensor]:
    """The weights the benchmark scores: the last teacher, or the last student without one."""
    weights = result.last["teacher"] or result.last["student"]
    assert weights is not None
    return weights


def score_test(
    params: Params, data: Path, result: FitResult, out: Path, device: torch.device
) -> dict[str, Any]:
    """Evaluate the primary model on `test.txt`; write its per-image confusion matrices and ids
    to `out` (npz, atomically) and return `test_miou` (points) for the run's summary."""
    model = build_model(params.model.model_copy(update={"pretrained": None}))
    model.load_state_dict(primary_weights(result))
    loader = val_loader(params, data, split="test")
    norm = input_normalization(params, data)
    scores = evaluate(
        model, loader, params.model.num_classes, device, per_image=True, norm=norm,
        **params.evaluate.tiles(),
    )  # fmt: skip
    ids = read_list(data / "ImageSets" / "Segmentation" / "test.txt")
    matrices = scores["per_image"].numpy()
    # Counts fit uint16 for scenes up to 256 × 256; larger images keep int32.
    dtype = np.uint16 if matrices.max(initial=0) < 2**16 else np.int32
    with atomic_path(out) as tmp, tmp.open("wb") as fh:
        np.savez_compressed(fh, confusions=matrices.astype(dtype), ids=np.array(ids))
    return {"test_miou": round(100 * scores["miou"], 4)}


def premise_sample(unlabeled: list[str], size: int = PREMISE_SAMPLE) -> list[str]:
    """`size` ids evenly spaced over the unlabeled list (all of them if it is shorter)."""
    if len(unlabeled) <= size:
        return list(unlabeled)
    return [unlabeled[i * len(unlabeled) // size] for i in range(size)]


def premise_hook(
    params: Params,
    cfg: Any,
    data: Path,
    split: Path,
    device: torch.device,
    rows: list[dict[str, Any]],
) -> EvalHook:
    """`fit`'s on_eval callback: appends (epoch, id, easiness, pseudo-label mIoU) of the sample
    to `rows` and returns the epoch's `premise_spearman`."""
    ids = premise_sample(read_list(split / "unlabeled.txt"))
    loader = ids_loader(params, data, ids)
    norm = input_normalization(params, data)

    def hook(student: torch.nn.Module, teacher: torch.nn.Module | None, epoch: int) -> dict:
        assert teacher is not None
        found = premise_rows(
            student,
            teacher,
            loader,
            params.model.num_classes,
            cfg.tau,
            cfg.ignore_index0,
            device,
            norm,
        )
        for image_id, e, quality in found:
            rows.append({"epoch": epoch, "id": image_id, "easiness": e, "pseudo_miou": quality})
        rho = spearman([r[1] for r in found], [r[2] for r in found])
        return {"premise_spearman": rho}

    return hook


def write_premise(path: Path, rows: list[dict[str, Any]]) -> None:
    """`epoch,id,easiness,pseudo_miou` per sampled image and evaluation (6 decimals)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", "id", "easiness", "pseudo_miou"])
        for r in rows:
            writer.writerow(
                [r["epoch"], r["id"], f"{r['easiness']:.6f}", f"{r['pseudo_miou']:.6f}"]
            )
