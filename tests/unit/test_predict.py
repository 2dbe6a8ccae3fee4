"""imas/predict.py: the segmenter (whole image and sliding window on hand-made images), its file
format, and batches of one image size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support.training import MODEL
from torch import nn

from imas.data.layout import voc_palette
from imas.data.normalization import IMAGENET, Normalization
from imas.data.transforms import normalize
from imas.evaluate import predict
from imas.model import build_model
from imas.predict import (
    FORMAT,
    Classes,
    Inference,
    Segmenter,
    build_segmenter,
    read_segmenter,
    same_size_batches,
    segmenter_payload,
)

NAMES = ["background", "bright", "dark"]
CLASSES = Classes.voc(NAMES)


class Channels(nn.Module):
    """Logits = the normalised image's channels, so a pixel's class is its strongest channel
    after normalisation: red (255, 0, 0) → 0, green → 1, blue → 2, whatever the tiling."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)  # eval mode must keep it an identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def coloured(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A uint8 image [1, 3, H, W] in three colour bands and its class map [1, H, W]."""
    image = torch.zeros(1, 3, height, width, dtype=torch.uint8)
    classes = torch.zeros(1, height, width, dtype=torch.int64)
    for band in range(3):
        cols = slice(band * width // 3, (band + 1) * width // 3 if band < 2 else width)
        image[0, band, :, cols] = 255
        classes[0, :, cols] = band
    return image, classes


@pytest.mark.parametrize(
    "inference",
    [
        Inference(),
        Inference("sliding", 4, 3, "clip"),
        Inference("sliding", 4, 3, "shift"),
        Inference("sliding", 16, 8, "shift"),  # a window larger than the image: padded
    ],
)
def test_whole_and_sliding_give_each_pixel_its_class(inference: Inference) -> None:
    image, classes = coloured(5, 9)
    segmenter = Segmenter(Channels(), inference)
    out = segmenter(image.expand(2, -1, -1, -1))
    assert out.shape == (2, 5, 9) and out.dtype == torch.int64
    assert torch.equal(out, classes.expand(2, -1, -1))
    assert torch.equal(segmenter(image[0]), classes[0])  # one image [3, H, W] → [H, W]


def test_sliding_equals_the_evaluations_prediction_on_a_real_network() -> None:
    torch.manual_seed(0)
    network = build_model(MODEL)
    images = torch.randint(0, 256, (2, 3, 21, 27), dtype=torch.uint8)
    inference = Inference("sliding", 16, 8, "clip")
    out = Segmenter(network, inference)(images)
    assert out.shape == (2, 21, 27)
    assert torch.equal(out, predict(network, images, "sliding", 16, 8, "clip"))
    assert torch.equal(Segmenter(network, Inference())(images), predict(network, images))


def test_the_segmenter_stays_in_eval_mode() -> None:
    segmenter = Segmenter(Channels(), Inference())
    segmenter.train()
    assert not segmenter.training and not segmenter.network.bn.training


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.zeros(1, 3, 4, 4), "images must be uint8 RGB, got dtype torch.float32"),
        (
            torch.zeros(1, 1, 4, 4, dtype=torch.uint8),
            r"images must be \[B, 3, H, W\] or \[3, H, W\] uint8 RGB, got \(1, 1, 4, 4\)",
        ),
    ],
)
def test_bad_images_are_refused_by_shape_and_dtype(images: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Segmenter(Channels(), Inference())(images)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "sliding", "window": 4, "stride": 3}, "needs tiling 'clip' or 'shift', got None"),
        ({"mode": "whole", "window": 4}, "mode='whole' takes no window or stride"),
        ({"mode": "whole", "tiling": "clip"}, "mode='whole' takes no tiling"),
        ({"mode": "sliding", "window": 4, "stride": 5, "tiling": "clip"}, r"1 <= stride \(5\)"),
    ],
)
def test_inference_settings_are_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Inference(**kwargs)


def test_a_segmenter_file_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = build_model(MODEL).eval()
    inference = Inference("sliding", 8, 4, "shift")
    path = tmp_path / "segmenter.pt"
    norm = Normalization((0.25, 0.5, 0.75), (0.5, 0.25, 0.125))
    classes = Classes(NAMES, [(0, 0, 0), (255, 128, 0), (1, 2, 3)])
    torch.save(segmenter_payload(MODEL, network.state_dict(), inference, classes, norm), path)
    segmenter, read = read_segmenter(path)
    assert read == classes and segmenter.inference == inference and segmenter.norm == norm
    images = torch.randint(0, 256, (1, 3, 12, 10), dtype=torch.uint8)
    assert torch.equal(segmenter(images), Segmenter(network, inference, norm)(images))
    loaded = segmenter.network.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in network.state_dict().items())


def test_a_segmenter_file_is_checked(tmp_path: Path) -> None:
    state = build_model(MODEL).state_dict()
    with pytest.raises(ValueError, match="2 class names for a model of 3 classes"):
        segmenter_payload(MODEL, state, Inference(), Classes.voc(NAMES[:2]))
    other = tmp_path / "other.pt"
    torch.save({"format": "something/2"}, other)
    with pytest.raises(
        ValueError, match=r"other.pt: not a segmenter file \(format 'something/2', expected "
    ):
        read_segmenter(other)
    assert FORMAT == "imas-segmenter/1"
    short = tmp_path / "short.pt"
    payload = segmenter_payload(MODEL, state, Inference(), CLASSES)
    old = tmp_path / "old.pt"
    torch.save({k: v for k, v in payload.items() if k != "normalization"}, old)
    with pytest.raises(ValueError, match=r"old.pt: invalid segmenter file \('normalization'\)"):
        read_segmenter(old)
    del payload["state_dict"]["classifier.weight"]
    torch.save(payload, short)
    missing = r"(?s)short.pt: invalid segmenter file .*Missing key.*classifier\.weight"
    with pytest.raises(ValueError, match=missing):
        read_segmenter(short)
    with pytest.raises(FileNotFoundError, match=r"segmenter file .*missing.pt does not exist"):
        read_segmenter(tmp_path / "missing.pt")


def test_a_segmenter_file_carrying_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "code ran"))

    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "extra": Payload()}, path)
    with pytest.raises(ValueError, match=r"evil.pt: unreadable segmenter file \(UnpicklingError"):
        read_segmenter(path)
    assert not marker.exists()


def test_build_segmenter_loads_strictly() -> None:
    state = build_model(MODEL).state_dict()
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "extra.weight"'):
        build_segmenter(MODEL.model_dump(mode="json"), state, Inference())


def test_batches_hold_consecutive_images_of_one_size() -> None:
    sizes = ["a", "a", "b", "a", "a", "a", "a"]
    batches = same_size_batches(range(len(sizes)), lambda i: (sizes[i],), 2)
    assert list(batches) == [[0, 1], [2], [3, 4], [5, 6]]
    assert list(same_size_batches([], lambda i: (i,), 3)) == []
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        list(same_size_batches([1], lambda i: (i,), 0))


def test_normalisation_is_the_evaluations() -> None:
    # Channels' classes rest on this: pure red normalises to the largest first channel.
    image, _ = coloured(1, 3)
    x = normalize(image)[0]
    assert x[:, 0, 0].argmax() == 0 and x[:, 0, 1].argmax() == 1 and x[:, 0, 2].argmax() == 2


def test_the_segmenter_normalises_as_its_network_was_trained() -> None:
    # Yellow (255, 255, 0): ImageNet's statistics make green the strongest channel,
    # (1 - 0.456) / 0.224 = 2.43 > (1 - 0.485) / 0.229 = 2.25; a std of 0.1 for red makes red.
    image = torch.tensor([255, 255, 0], dtype=torch.uint8).view(1, 3, 1, 1)
    assert Segmenter(Channels(), Inference())(image).item() == 1
    assert Segmenter(Channels(), Inference(), IMAGENET)(image).item() == 1
    red_first = Normalization((0.0, 0.0, 0.0), (0.1, 1.0, 1.0))
    assert Segmenter(Channels(), Inference(), red_first)(image).item() == 0
    sliding = Segmenter(Channels(), Inference("sliding", 1, 1, "clip"), red_first)
    assert sliding(image).item() == 0


def test_classes_carry_colours_and_a_full_palette() -> None:
    flat = voc_palette()
    assert CLASSES.colours == [(0, 0, 0), (128, 0, 0), (0, 128, 0)]
    assert CLASSES.palette() == flat
    own = Classes(["bg", "blob"], [(10, 20, 30), (255, 0, 0)])
    palette = own.palette()
    assert palette[:6] == [10, 20, 30, 255, 0, 0] and palette[6:] == flat[6:]
    assert len(palette) == 768
    with pytest.raises(ValueError, match="2 class names but 1 colours"):
        Classes(["bg", "blob"], [(0, 0, 0)])
    with pytest.raises(ValueError, match=r"colours must be RGB triples in 0\.\.255"):
        Classes(["bg"], [(0, 0, 256)])
