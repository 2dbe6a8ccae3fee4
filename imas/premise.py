"""The premise behind iMAS, measured: does easiness rank unlabeled images by how good their
pseudo-labels are?

On unlabeled images whose ground truth exists (the built-in scenes have it; it is read for this
diagnostic only, never for training), `premise_rows` computes each image's easiness e = 1 − γ
exactly as a training step does (student in eval mode and teacher on the image, `hardness` with
the run's τ and ignore_index0) and the mIoU of the teacher's pseudo-label against the truth.
If iMAS's premise holds, the two rank the images alike (issue 17's rule (e): Spearman > 0.3).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imas.data.normalization import IMAGENET, Normalization
from imas.data.transforms import normalize
from imas.evaluate import confusion_matrix, iou
from imas.hardness import hardness


@torch.no_grad()
def premise_rows(
    student: nn.Module,
    teacher: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor, Sequence[object]]],
    num_classes: int,
    tau: float,
    ignore_index0: bool,
    device: torch.device | str = "cpu",
    norm: Normalization = IMAGENET,
) -> list[tuple[str, float, float]]:
    """(image id, easiness, pseudo-label mIoU) for every image of `batches` (uint8 images,
    masks, ids, normalised by `norm`), in order. Both models are left in the mode they came
    in."""
    modes = student.training, teacher.training
    student.eval()
    teacher.eval()
    rows: list[tuple[str, float, float]] = []
    for images, masks, ids in batches:
        x = normalize(images.to(device), norm)
        p_s = F.softmax(student(x), dim=1)
        p_t = F.softmax(teacher(x), dim=1)
        gamma = hardness(p_s, p_t, tau, ignore_index0)
        pseudo = p_t.argmax(dim=1)
        for i, image_id in enumerate(ids):
            conf = confusion_matrix(pseudo[i], masks[i].to(device), num_classes)
            rows.append((str(image_id), 1.0 - float(gamma[i]), iou(conf)[1]))
    student.train(modes[0])
    teacher.train(modes[1])
    return rows


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"need two equal-length samples of at least 2, got {len(x)}, {len(y)}")
    rx, ry = (
        _ranks(torch.tensor(x, dtype=torch.float64)),
        _ranks(torch.tensor(y, dtype=torch.float64)),
    )
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = float((rx.square().sum() * ry.square().sum()).sqrt())
    return float((rx * ry).sum()) / denom if denom > 0 else float("nan")


def _ranks(v: Tensor) -> Tensor:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = v.argsort(stable=True)
    ranks = torch.empty_like(v)
    ranks[order] = torch.arange(1, len(v) + 1, dtype=v.dtype)
    _, inverse, counts = torch.unique(v, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(counts), dtype=v.dtype).index_add_(0, inverse, ranks)
    return (sums / counts.to(v.dtype))[inverse]
