"""The export command's pure parts: size parsing, parity figures, which weights a checkpoint
gives, output names (the exports themselves: tests/stage/test_export.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from imas.config import ModelConfig
from pipeline.export.command import select_weights
from pipeline.export.formats import ExportError, check_available, default_out
from pipeline.export.parity import check_shapes, parity, parse_size, random_images

CFG = ModelConfig(
    backbone="tiny", num_classes=3, width=4, aspp_channels=8, aspp_rates=(1, 2, 3),
    low_level_channels=4, output_stride=8, stem=None, multi_grid=None, pretrained=None,
    aux_head=False,
)  # fmt: skip


@pytest.mark.parametrize(
    ("text", "size"), [("129x161", (129, 161)), (" 7 X 9 ", (7, 9)), ("1×2", (1, 2))]
)
def test_sizes_parse_as_height_by_width(text: str, size: tuple[int, int]) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["129", "0x5", "5x-1", "ax5", "5x5x5", ""])
def test_a_bad_size_is_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match=rf"^size '{text}': expected HEIGHTxWIDTH"):
        parse_size(text)


def test_check_shapes_vary_the_batch() -> None:
    assert check_shapes([(9, 10), (11, 12), (13, 14)]) == [
        (2, 3, 9, 10),
        (1, 3, 11, 12),
        (1, 3, 13, 14),
    ]


def test_random_images_are_seeded() -> None:
    a, b = random_images((1, 3, 4, 5), 3), random_images((1, 3, 4, 5), 3)
    assert torch.equal(a, b) and not torch.equal(a, random_images((1, 3, 4, 5), 4))


class Scale(nn.Module):
    """logits = 2·x on the first two channels: exact in float32, so float64 agrees."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x[:, :2]


def test_parity_reports_the_largest_difference_and_the_scale() -> None:
    shapes = [(2, 3, 4, 4), (1, 3, 5, 6)]

    def one_wrong_logit(images: torch.Tensor) -> torch.Tensor:
        logits = 2 * images[:, :2]
        logits[0, 1, 2, 3] = 100.0
        return logits

    results = parity(Scale(), one_wrong_logit, shapes, seed=5)
    assert [r.shape for r in results] == shapes
    for i, r in enumerate(results):  # the i-th input is drawn with seed 5 + i
        expected = 2 * random_images(shapes[i], 5 + i)[:, :2]
        # float32 values differ exactly in float64
        assert r.max_diff == 100.0 - expected[0, 1, 2, 3].double().item()
        assert r.max_logit == expected.abs().max().item()
        assert r.float32_error == 0.0
    assert results[0].line().startswith("2×3×4×4: max |logit diff| ")


def test_parity_refuses_logits_of_another_shape() -> None:
    with pytest.raises(ValueError, match=r"input \(1, 3, 4, 4\): the export returned logits "):
        parity(Scale(), lambda x: x, [(1, 3, 4, 4)], seed=0)


def _nets(scale: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((1,), scale)}


@pytest.fixture
def checkpoint() -> dict:
    return {
        "model": CFG.model_dump(mode="json"),
        "best": {"student": _nets(1.0), "teacher": _nets(2.0)},
        "last": {"student": _nets(3.0), "teacher": _nets(4.0)},
    }


@pytest.mark.parametrize(
    ("net", "snapshot", "value", "picked"),
    [
        ("auto", "last", 4.0, "last teacher"),
        ("student", "last", 3.0, "last student"),
        ("auto", "best", 2.0, "best teacher"),
        ("student", "best", 1.0, "best student"),
    ],
)
def test_weights_are_picked_by_net_and_snapshot(
    checkpoint: dict, net: str, snapshot: str, value: float, picked: str
) -> None:
    cfg, state, what = select_weights(checkpoint, net, snapshot, Path("c.pt"))
    assert cfg == CFG and state["w"].item() == value and what == picked


def test_auto_takes_the_student_of_a_supervised_run(checkpoint: dict) -> None:
    checkpoint["last"]["teacher"] = None
    assert select_weights(checkpoint, "auto", "last", Path("c.pt"))[2] == "last student"
    with pytest.raises(ValueError, match=r"^c\.pt: no teacher weights \(a supervised run"):
        select_weights(checkpoint, "teacher", "last", Path("c.pt"))


def test_a_weights_file_gives_its_last_networks(checkpoint: dict) -> None:
    weights = {"model": checkpoint["model"], **checkpoint["last"]}
    assert select_weights(weights, "auto", "last", Path("w.pt"))[1]["w"].item() == 4.0
    with pytest.raises(ValueError, match=r"^w\.pt: a --weights file holds the last weights"):
        select_weights(weights, "auto", "best", Path("w.pt"))


def test_a_checkpoint_without_a_model_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^p\.pt: not a training checkpoint"):
        select_weights({"stem.0.weight": torch.zeros(1)}, "auto", "last", Path("p.pt"))


def test_outputs_are_named_after_the_checkpoint() -> None:
    assert default_out(Path("models/imas.pt"), "onnx") == Path("models/imas.onnx")
    assert default_out(Path("models/imas.pt"), "torch-export") == Path("models/imas.pt2")
    assert default_out(Path("w/x.y.pt"), "torchscript") == Path("w/x.y.torchscript.pt")


def test_an_unknown_format_is_refused_by_name() -> None:
    with pytest.raises(ExportError, match=r"^unknown format 'tflite' \(have: onnx, torch-export"):
        check_available("tflite")


def test_a_missing_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "onnxscript" else real(name)
    )
    with pytest.raises(ExportError, match=r"^--format onnx needs onnxscript: pip install"):
        check_available("onnx")
    check_available("torch-export")  # needs nothing beyond torch
