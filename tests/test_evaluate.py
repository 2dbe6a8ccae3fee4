"""Confusion matrix and IoU: rows = target, absent classes excluded from the mean."""

from __future__ import annotations

import math

import pytest
import torch

from imas.evaluate import confusion_matrix, iou


def test_confusion_rows_are_targets_and_ignore_is_skipped() -> None:
    target = torch.tensor([[0, 0, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 2]])
    cm = confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]


def test_iou_hand_computed_and_absent_class_excluded() -> None:
    cm = torch.tensor([[1, 1, 0], [0, 1, 0], [0, 0, 0]])
    per_class, miou = iou(cm)
    assert per_class[0].item() == pytest.approx(0.5)
    assert per_class[1].item() == pytest.approx(0.5)
    assert math.isnan(per_class[2].item())
    assert miou == pytest.approx(0.5)


def test_class_only_predicted_counts_as_zero() -> None:
    cm = confusion_matrix(torch.tensor([1, 1]), torch.tensor([0, 0]), 2)
    per_class, miou = iou(cm)
    assert per_class.tolist() == [0.0, 0.0] and miou == 0.0


def test_out_of_range_target_is_an_error() -> None:
    with pytest.raises(ValueError, match="class 5"):
        confusion_matrix(torch.tensor([0]), torch.tensor([5]), 3)


def reference_iou(pred: list[int], target: list[int], num_classes: int) -> tuple[list, float]:
    """Per-class IoU by counting pixels one by one; NaN where a class is in neither map."""
    per_class = []
    for c in range(num_classes):
        pairs = [(p, t) for p, t in zip(pred, target, strict=True) if t != 255]
        inter = sum(1 for p, t in pairs if p == c and t == c)
        union = sum(1 for p, t in pairs if p == c or t == c)
        per_class.append(inter / union if union else float("nan"))
    present = [v for v in per_class if not math.isnan(v)]
    return per_class, sum(present) / len(present) if present else float("nan")


@pytest.mark.parametrize("num_classes", [1, 2, 5, 21])
def test_iou_matches_pixel_counting_reference(num_classes: int) -> None:
    gen = torch.Generator().manual_seed(num_classes)
    for shape in [(1, 1), (3, 7), (2, 5, 4)]:
        target = torch.randint(0, num_classes, shape, generator=gen)
        target[torch.rand(shape, generator=gen) < 0.2] = 255
        pred = torch.randint(0, num_classes, shape, generator=gen)
        per_class, miou = iou(confusion_matrix(pred, target, num_classes))
        want, want_miou = reference_iou(
            pred.flatten().tolist(), target.flatten().tolist(), num_classes
        )
        for got, exp in zip(per_class.tolist(), want, strict=True):
            assert (math.isnan(got) and math.isnan(exp)) or got == pytest.approx(exp)
        assert (math.isnan(miou) and math.isnan(want_miou)) or miou == pytest.approx(want_miou)


def test_out_of_range_prediction_is_an_error() -> None:
    # t·C + p would land in a neighbouring cell ((0, 3) → (1, 0)) and go unnoticed.
    with pytest.raises(ValueError, match="prediction holds class 3"):
        confusion_matrix(torch.tensor([3]), torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="prediction holds class -1"):
        confusion_matrix(torch.tensor([-1]), torch.tensor([1]), 3)
    with pytest.raises(ValueError, match="target holds class -2"):
        confusion_matrix(torch.tensor([0]), torch.tensor([-2]), 3)
    # a prediction on an ignored pixel is never counted, so it is not checked either
    assert confusion_matrix(torch.tensor([7]), torch.tensor([255]), 3).sum() == 0


@pytest.mark.parametrize("num_classes", [2, 3, 8, 21])
def test_confusion_matrix_matches_pixel_counting(num_classes: int) -> None:
    gen = torch.Generator().manual_seed(40 + num_classes)
    for shape in [(1, 1), (1, 9), (4, 3), (2, 5, 7)]:
        for ignore_index in (255, 0):
            target = torch.randint(0, num_classes, shape, generator=gen)
            target[torch.rand(shape, generator=gen) < 0.2] = 255
            pred = torch.randint(0, num_classes, shape, generator=gen)
            want = [[0] * num_classes for _ in range(num_classes)]
            for p, t in zip(pred.flatten().tolist(), target.flatten().tolist(), strict=True):
                if t != ignore_index and t != 255:
                    want[t][p] += 1  # row = target, column = prediction
            if ignore_index != 255:  # 255 is a real (invalid) class once it is not ignored
                target[target == 255] = ignore_index
            got = confusion_matrix(pred, target, num_classes, ignore_index)
            assert got.tolist() == want, (shape, ignore_index)


def test_iou_one_class_all_background_and_all_ignored_maps() -> None:
    zeros = torch.zeros(3, 4, dtype=torch.long)
    # perfect all-background map: only class 0 is present, so mIoU is its IoU alone
    per_class, miou = iou(confusion_matrix(zeros, zeros, 4))
    assert per_class[0].item() == 1.0 and per_class[1:].isnan().all() and miou == 1.0
    # one-class maps that disagree: both classes present with IoU 0, the others absent
    per_class, miou = iou(confusion_matrix(zeros + 2, zeros, 4))
    assert per_class[[0, 2]].tolist() == [0.0, 0.0] and per_class[[1, 3]].isnan().all()
    assert miou == 0.0
    # every pixel ignored: nothing to score
    per_class, miou = iou(confusion_matrix(zeros + 1, zeros + 255, 4))
    assert per_class.isnan().all() and math.isnan(miou)
    # hand-computed mixture: target [0,0,1,1,2,2], pred [0,1,1,1,2,0]
    cm = confusion_matrix(torch.tensor([0, 1, 1, 1, 2, 0]), torch.tensor([0, 0, 1, 1, 2, 2]), 5)
    per_class, miou = iou(cm)
    assert per_class[:3].tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert miou == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)  # classes 3, 4 excluded
