"""Writing stage outputs: atomically, and in the formats the report and DVC read.

Kept free of torch so that the report stage starts fast.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it over `path` only if the block succeeds.

    DVC therefore never caches a half-written output, and a failed stage leaves the previous
    file untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(path: Path | str, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


HISTORY_FIELDS = [
    "epoch",
    "loss",
    "loss_x",
    "loss_u",
    "easiness",
    "confident_ratio",
    "cutmix",
    "pure_background",
    "lr",
    "miou_student",
    "miou_teacher",
    "premise_spearman",
]


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    """Per-epoch CSV that DVC plots and the report read; mIoU in points (0–100)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            out = dict(row)
            for key in ("miou_student", "miou_teacher"):
                if key in out:
                    out[key] = round(100 * out[key], 4)
            writer.writerow({k: out.get(k, "") for k in HISTORY_FIELDS})


def write_hardness(path: Path, per_epoch: list[list[float]]) -> None:
    """One row per unlabeled image trained on: `epoch,hardness` (γ in [0, 1], 6 decimals)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", "hardness"])
        for epoch, values in enumerate(per_epoch):
            writer.writerows([epoch, f"{v:.6f}"] for v in values)
