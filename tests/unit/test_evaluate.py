"""Confusion matrix and IoU: rows = target, absent classes excluded from the mean."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from torch import Tensor, nn

from imas.config import ModelConfig
from imas.data.transforms import normalize
from imas.evaluate import (
    clipped_windows,
    confusion_matrix,
    evaluate,
    iou,
    predict,
    sliding_probabilities,
    tile_boxes,
    window_starts,
)
from imas.model import build_model

ROOT = Path(__file__).resolve().parents[2]


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


# --- sliding-window evaluation -------------------------------------------------------------


class RowBand(nn.Module):
    """Two classes; class 1 certain (logit +1000) in the top half of whatever it is shown and
    class 0 certain below, so each tile's softmax is exactly 0 or 1 and depends on where the
    tile starts. Records the inputs it was called with."""

    def __init__(self, axis: int = -2) -> None:
        super().__init__()
        self.axis, self.seen, self.modes = axis, [], []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.clone())
        self.modes.append(self.training)
        b, _, h, w = x.shape
        n = x.shape[self.axis]
        # ±1000: exp(-1000) is 0 in float32, so the softmax is exactly 0 or 1
        first_half = (torch.arange(n) < n // 2).float() * 2000 - 1000
        shape = (1, 1, n, 1) if self.axis == -2 else (1, 1, 1, n)
        one = first_half.view(shape).expand(b, 1, h, w)
        return torch.cat([torch.zeros_like(one), one], dim=1)


class Constant(nn.Module):
    """One class: softmax is exactly 1 everywhere, so the summed map is the tile count."""

    def forward(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], 1, *x.shape[2:])


def images(b: int, h: int, w: int, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=gen)


def outer(rows: list[float], cols: list[float]) -> Tensor:
    return torch.tensor(rows, dtype=torch.float32)[:, None] * torch.tensor(cols)[None, :]


def authors_tiles(h: int, w: int, crop: int) -> list[tuple[int, int, int, int]]:
    """The loops of the authors' validate_citys, written out: windows every int(crop·2/3)
    pixels, each cut at the border."""
    boxes, row = [], 0
    while row < h:
        col = 0
        while col < w:
            boxes.append((row, min(h, row + crop), col, min(w, col + crop)))
            col += int(crop * 2 / 3)
        row += int(crop * 2 / 3)
    return boxes


def test_clipped_tiles_of_a_cityscapes_image_are_the_authors() -> None:
    rows = [(0, 769), (512, 1024)]
    cols = [(0, 769), (512, 1281), (1024, 1793), (1536, 2048)]
    want = [(y0, y1, x0, x1) for y0, y1 in rows for x0, x1 in cols]
    assert clipped_windows(1024, 769, 512) == rows and clipped_windows(2048, 769, 512) == cols
    assert tile_boxes(1024, 2048, 769, 512, "clip") == want == authors_tiles(1024, 2048, 769)
    sizes = {(y1 - y0, x1 - x0) for y0, y1, x0, x1 in want}
    assert sizes == {(769, 769), (769, 512), (512, 769), (512, 512)}  # edge tiles are smaller
    # The other tiling moves full windows inside the image instead.
    shifted = tile_boxes(1024, 2048, 769, 512, "shift")
    assert {(y1 - y0, x1 - x0) for y0, y1, x0, x1 in shifted} == {(769, 769)}
    assert [b[0] for b in shifted[::4]] == [0, 255]
    # Smaller images and other strides as the authors' loops give them.
    for h, w, crop in ((10, 13, 6), (5, 3, 6), (300, 700, 100)):
        stride = int(crop * 2 / 3)
        assert tile_boxes(h, w, crop, stride, "clip") == authors_tiles(h, w, crop)
    with pytest.raises(ValueError, match="tiling must be"):
        tile_boxes(10, 10, 6, 4, "pad")  # type: ignore[arg-type]


def test_clip_tiling_sums_each_tile_once_without_padding() -> None:
    # rows: [0, 6), [4, 10), [8, 10); columns: [0, 6), [4, 10), [8, 13), [12, 13)
    rows = [1, 1, 1, 1, 2, 2, 1, 1, 2, 2]
    cols = [1, 1, 1, 1, 2, 2, 1, 1, 2, 2, 1, 1, 2]
    img = images(2, 10, 13)
    model = RowBand()
    got = sliding_probabilities(Constant(), img, 1, window=6, stride=4, tiling="clip")
    assert torch.equal(got[0, 0], outer(rows, cols)) and torch.equal(got[1, 0], outer(rows, cols))
    sliding_probabilities(model, img, 2, window=6, stride=4)  # clip is the default
    boxes = tile_boxes(10, 13, 6, 4, "clip")
    assert [tuple(x.shape[-2:]) for x in model.seen] == [(b - a, d - c) for a, b, c, d in boxes]
    for (y0, y1, x0, x1), tile in zip(boxes, model.seen, strict=True):
        assert torch.equal(tile, normalize(img)[:, :, y0:y1, x0:x1])  # the image itself
    # Nothing is padded: an image no longer than the stride is one tile, itself; a longer one
    # smaller than the window still gets a second, cut tile at the stride (the authors' loop).
    small = RowBand()
    sliding_probabilities(small, images(1, 4, 3), 2, window=6, stride=4)
    sliding_probabilities(small, images(1, 5, 3), 2, window=6, stride=4)
    assert [tuple(x.shape) for x in small.seen] == [(1, 3, 4, 3), (1, 3, 5, 3), (1, 3, 1, 3)]


def test_window_starts_align_the_last_window_to_the_border() -> None:
    assert window_starts(10, 6, 4) == [0, 4]
    assert window_starts(13, 6, 4) == [0, 4, 7]  # 8 would overrun: moved back to 13 - 6
    assert window_starts(6, 6, 4) == [0]
    assert window_starts(12, 4, 4) == [0, 4, 8]  # no overlap, exact fit
    # Cityscapes: 1024 x 2048 with 769 windows every 512 pixels
    assert window_starts(1024, 769, 512) == [0, 255]
    assert window_starts(2048, 769, 512) == [0, 512, 1024, 1279]
    with pytest.raises(ValueError, match="stride"):
        window_starts(10, 4, 5)


def test_tile_count_map_10x13_window6_stride4() -> None:
    # rows: tiles [0, 6) and [4, 10); columns: [0, 6), [4, 10), [7, 13)
    rows = [1, 1, 1, 1, 2, 2, 1, 1, 1, 1]
    cols = [1, 1, 1, 1, 2, 2, 1, 2, 2, 2, 1, 1, 1]
    got = sliding_probabilities(
        Constant(), images(2, 10, 13), 1, window=6, stride=4, tiling="shift"
    )
    assert got.shape == (2, 1, 10, 13)
    assert torch.equal(got[0, 0], outer(rows, cols)) and torch.equal(got[1, 0], outer(rows, cols))


def test_summed_probabilities_of_a_position_dependent_model_are_hand_computed() -> None:
    model = RowBand()
    got = sliding_probabilities(model, images(1, 10, 13), 2, window=6, stride=4, tiling="shift")
    # Class 1 in each tile's rows 0-2. Row tiles start at 0 and 4: image rows 0-2 (tile 0) and
    # 4-6 (tile 1) get one vote per column tile; row 3 and rows 7-9 none.
    band = [1, 1, 1, 0, 1, 1, 1, 0, 0, 0]
    count_rows = [1, 1, 1, 1, 2, 2, 1, 1, 1, 1]
    cols = [1, 1, 1, 1, 2, 2, 1, 2, 2, 2, 1, 1, 1]
    assert torch.equal(got[0, 1], outer(band, cols))
    rest = [c - b for c, b in zip(count_rows, band, strict=True)]
    assert torch.equal(got[0, 0], outer(rest, cols))
    assert len(model.seen) == 2 * 3 and all(x.shape[-2:] == (6, 6) for x in model.seen)
    assert model.modes == [False] * 6 and model.training  # eval mode, then restored


def test_image_smaller_than_the_window_is_zero_padded_evenly_and_cropped_back() -> None:
    model = RowBand(axis=-1)  # class 1 in the left half of the padded 6 x 6 tile
    img = images(1, 5, 3)
    got = sliding_probabilities(model, img, 2, window=6, stride=4, tiling="shift")
    assert got.shape == (1, 2, 5, 3)
    assert torch.equal(got.sum(dim=1), torch.ones(1, 5, 3))  # one tile covers every pixel once
    # 3 padding columns: 1 on the left, 2 on the right; tile columns 0-2 are class 1, so image
    # columns 0-1 (tile columns 1-2) are class 1 and column 2 is class 0.
    assert got[0, 1].tolist() == [[1.0, 1.0, 0.0]] * 5
    (tile,) = model.seen
    assert tile.shape == (1, 3, 6, 6)
    # 1 padding row, at the bottom (the odd pixel goes after); padding is 0 after normalising
    assert torch.equal(tile[:, :, 0:5, 1:4], normalize(img))
    pad = torch.ones(6, 6, dtype=torch.bool)
    pad[0:5, 1:4] = False
    assert (tile[:, :, pad] == 0).all()


def test_one_side_smaller_than_the_window() -> None:
    # 4 x 13: padded to 6 rows (1 above, 1 below), columns tiled [0, 4, 7] as before
    got = sliding_probabilities(Constant(), images(1, 4, 13), 1, window=6, stride=4, tiling="shift")
    assert torch.equal(got[0, 0], outer([1] * 4, [1, 1, 1, 1, 2, 2, 1, 2, 2, 2, 1, 1, 1]))


def test_pointwise_model_predicts_the_same_whole_and_sliding() -> None:
    torch.manual_seed(0)
    model = nn.Conv2d(3, 5, kernel_size=1)  # translation-equivariant, no context
    img = images(2, 10, 13, seed=3)
    whole = predict(model, img)
    # counts 1, 2 and 4 are powers of two, so count x p is exact and the argmax cannot move
    sliding = predict(model, img, "sliding", window=6, stride=4, tiling="shift")
    assert torch.equal(sliding, whole)
    probs = sliding_probabilities(model, img, 5, window=6, stride=4, tiling="shift")
    count = outer([1, 1, 1, 1, 2, 2, 1, 1, 1, 1], [1, 1, 1, 1, 2, 2, 1, 2, 2, 2, 1, 1, 1])
    with torch.no_grad():
        expected = model(normalize(img)).softmax(dim=1) * count
    torch.testing.assert_close(probs, expected)


def test_evaluate_sliding_on_a_tiny_batch() -> None:
    # RowBand predicts class 1 where its band gets more votes than the rest: rows 0-2 and 6.
    # Rows 4-5 tie (one vote each) and are ignored in the target; rows 3, 7-9 are class 0.
    pred_rows = [1, 1, 1, 0, None, None, 1, 0, 0, 0]
    target = torch.tensor([[255 if r is None else r] * 13 for r in pred_rows])
    masks = torch.stack([target, target.clone()])
    masks[1, 3] = 1  # second image: row 3 is class 1, predicted 0 → 13 misses
    batches = [(images(2, 10, 13), masks, "ids")]
    out = evaluate(RowBand(), batches, 2, mode="sliding", window=6, stride=4, tiling="shift")
    # each image: 4 rows x 13 of class 0 and 4 x 13 of class 1 right; image 2 moves row 3
    assert out["confusion"].tolist() == [[104 - 13, 0], [13, 104]]
    assert out["miou"] == pytest.approx(((104 - 13) / 104 + 104 / 117) / 2)
    # the same batch whole: the band is rows 0-4 of the 10-row image, so row 3 is predicted 1
    # (wrong in image 1, right in image 2) and row 6 is predicted 0 (wrong in both)
    whole = evaluate(RowBand(), batches, 2)
    assert whole["confusion"].tolist() == [[6 * 13, 13], [2 * 13, 7 * 13]]


def old_evaluate(model: nn.Module, batches, num_classes: int) -> dict:
    """evaluate() before sliding windows existed: one forward pass per batch."""
    total = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    model.eval()
    with torch.no_grad():
        for batch in batches:
            labels = model(normalize(batch[0])).argmax(dim=1)
            total += confusion_matrix(labels, batch[1], num_classes)
    per_class, miou = iou(total)
    return {"miou": miou, "per_class_iou": per_class.tolist(), "confusion": total}


def test_whole_mode_matches_the_old_code_path_exactly() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig.model_validate(
        {**yaml.safe_load((ROOT / "params.yaml").read_text())["model"], "width": 4}
    )
    model = build_model(cfg)
    gen = torch.Generator().manual_seed(1)
    batches = [
        (images(3, 32, 32, seed=s), torch.randint(0, cfg.num_classes, (3, 32, 32), generator=gen))
        for s in range(2)
    ]
    want = old_evaluate(model, batches, cfg.num_classes)
    for got in (
        evaluate(model, batches, cfg.num_classes),
        evaluate(model, batches, cfg.num_classes, mode="whole", window=None, stride=None),
    ):
        assert torch.equal(got["confusion"], want["confusion"])
        assert got["miou"] == want["miou"] and got["per_class_iou"] == want["per_class_iou"]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"mode": "sliding"}, "needs window and stride"),
        ({"mode": "sliding", "window": 6}, "needs window and stride"),
        ({"mode": "sliding", "window": 4, "stride": 6}, "stride (6) <= window (4)"),
        ({"mode": "whole", "window": 6}, "takes no window or stride"),
        ({"mode": "tiles"}, "mode must be"),
    ],
)
def test_evaluate_rejects_inconsistent_window_arguments(kwargs: dict, needle: str) -> None:
    batches = [(images(1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long))]
    with pytest.raises(ValueError, match=re.escape(needle)):
        evaluate(Constant(), batches, 1, **kwargs)


def test_sliding_checks_the_model_output_against_num_classes() -> None:
    with pytest.raises(ValueError, match=re.escape("model returned (1, 1, 6, 6)")):
        sliding_probabilities(Constant(), images(1, 10, 13), 3, window=6, stride=4, tiling="shift")
