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
