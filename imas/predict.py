"""Masks from a trained network: the network and how it is applied (whole image or sliding
window), batched over images of one size, and the file format that carries both.

A `Segmenter` takes what a reader of image files has, uint8 RGB `[B, 3, H, W]`, and returns
class indices `[B, H, W]`: the evaluation's `predict`, so a mask written here is the one the
evaluation scored. The pipeline's `imas predict` and the MLflow model both go through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor, nn

from imas.config import ModelConfig
from imas.data.layout import Classes
from imas.data.normalization import IMAGENET, Normalization
from imas.evaluate import Tiling, _check_mode, predict
from imas.model import build_model

# The version of the payload `segmenter_payload` builds; a reader refuses any other.
FORMAT = "imas-segmenter/1"


@dataclass(frozen=True)
class Inference:
    """How a network is applied: `whole` (one forward pass per image) or `sliding` (`window`
    tiles every `stride` pixels, softmax summed, `tiling` at the border), as
    `imas.evaluate.predict` takes them."""

    mode: Literal["whole", "sliding"] = "whole"
    window: int | None = None
    stride: int | None = None
    tiling: Tiling | None = None

    def __post_init__(self) -> None:
        _check_mode(self.mode, self.window, self.stride)
        if self.mode == "whole" and self.tiling is not None:
            raise ValueError(f"mode='whole' takes no tiling, got tiling={self.tiling!r}")
        if self.mode == "sliding" and self.tiling not in ("clip", "shift"):
            raise ValueError(f"mode='sliding' needs tiling 'clip' or 'shift', got {self.tiling!r}")

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `imas.evaluate.predict`."""
        if self.mode == "whole":
            return {"mode": "whole"}
        return {"mode": "sliding", "window": self.window, "stride": self.stride,
                "tiling": self.tiling}  # fmt: skip


class Segmenter(nn.Module):
    """A network with its `Inference`: uint8 images `[B, 3, H, W]` (or one `[3, H, W]`) →
    int64 class indices `[B, H, W]` (or `[H, W]`), the images normalised by `norm` as in
    training. Always in eval mode."""

    def __init__(
        self, network: nn.Module, inference: Inference, norm: Normalization = IMAGENET
    ) -> None:
        super().__init__()
        self.network = network.eval()
        self.inference = inference
        self.norm = norm

    def train(self, mode: bool = True) -> Segmenter:
        # Prediction only: BatchNorm must keep its running statistics, whoever calls train().
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 RGB, got dtype {images.dtype}")
        single = images.ndim == 3
        batch = images[None] if single else images
        if batch.ndim != 4 or batch.shape[1] != 3 or min(batch.shape[2:]) < 1:
            raise ValueError(
                f"images must be [B, 3, H, W] or [3, H, W] uint8 RGB, got {tuple(images.shape)}"
            )
        labels = predict(self.network, batch, **self.inference.kwargs(), norm=self.norm)
        return labels[0] if single else labels


def build_segmenter(
    model: ModelConfig | Mapping[str, Any],
    state_dict: Mapping[str, Tensor],
    inference: Inference,
    norm: Normalization = IMAGENET,
) -> Segmenter:
    """The network of `model` (a config or its dict) with `state_dict` loaded strictly: a
    missing, unexpected or misshapen key fails, naming it."""
    cfg = model if isinstance(model, ModelConfig) else ModelConfig.model_validate(dict(model))
    network = build_model(cfg)
    network.load_state_dict(dict(state_dict), strict=True)
    return Segmenter(network, inference, norm)


def segmenter_payload(
    model: ModelConfig,
    state_dict: Mapping[str, Tensor],
    inference: Inference,
    classes: Classes,
    norm: Normalization = IMAGENET,
) -> dict[str, Any]:
    """What a segmenter file holds: plain types and tensors only, so it loads with
    `torch.load(weights_only=True)` and never runs code."""
    if len(classes.names) != model.num_classes:
        raise ValueError(
            f"{len(classes.names)} class names for a model of {model.num_classes} classes"
        )
    return {
        "format": FORMAT,
        "model": model.model_dump(mode="json"),
        "state_dict": dict(state_dict),
        "inference": asdict(inference),
        "normalization": norm.as_dict(),
        "class_names": list(classes.names),
        "class_colours": [list(c) for c in classes.colours],
    }


def read_segmenter(path: Path | str) -> tuple[Segmenter, Classes]:
    """The segmenter and classes of a file written from `segmenter_payload`; ValueError
    naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"segmenter file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, code in the file
        reason = f"{type(err).__name__}: {err}"
        raise ValueError(f"{path}: unreadable segmenter file ({reason})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: not a segmenter file (format {found!r}, expected {FORMAT!r})")
    try:
        inference = Inference(**payload["inference"])
        norm = Normalization.from_dict(payload["normalization"])
        colours = [(int(r), int(g), int(b)) for r, g, b in payload["class_colours"]]
        classes = Classes(list(payload["class_names"]), colours)
        segmenter = build_segmenter(payload["model"], payload["state_dict"], inference, norm)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: invalid segmenter file ({err!s})") from err
    return segmenter, classes


T = TypeVar("T")


def same_size_batches(
    items: Iterable[T], size: Callable[[T], tuple[int, ...]], batch_size: int
) -> Iterator[list[T]]:
    """Consecutive items in lists of at most `batch_size` that share one `size`: images of
    different sizes cannot be stacked, and padding them would change their predictions."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batch: list[T] = []
    for item in items:
        if batch and (len(batch) == batch_size or size(item) != size(batch[0])):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch
