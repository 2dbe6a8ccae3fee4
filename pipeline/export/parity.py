"""Does an exported network compute what the PyTorch one does? Max |logit difference| on seeded
random inputs at several sizes."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pipeline.export.formats import Runner

# A size option: HEIGHTxWIDTH, e.g. 129x161.
_SIZE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_size(text: str) -> tuple[int, int]:
    """`"97x161"` → (97, 161); ValueError naming the text otherwise."""
    match = _SIZE.match(text)
    if match is None or min(int(match[1]), int(match[2])) < 1:
        raise ValueError(f"size {text!r}: expected HEIGHTxWIDTH with positive whole numbers")
    return int(match[1]), int(match[2])


def check_shapes(sizes: list[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """Input shapes of the parity check: batch 2 at the first size (also the export's example,
    which needs a batch above 1), batch 1 at the others, so the batch varies too."""
    return [(2 if i == 0 else 1, 3, h, w) for i, (h, w) in enumerate(sizes)]


def random_images(shape: tuple[int, ...], seed: int) -> Tensor:
    """Standard-normal float32 images, the same for the same shape and seed (normalised images
    are roughly standard normal)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@dataclass(frozen=True)
class Parity:
    shape: tuple[int, ...]
    max_diff: float  # max |exported − PyTorch| over every logit
    # max |PyTorch float32 − PyTorch float64|: float32's own error on this input, the floor no
    # float32 runtime can be expected to beat (it grows with depth and logit scale)
    float32_error: float
    max_logit: float  # max |PyTorch logit|: the scale both are read against

    def line(self) -> str:
        size = "×".join(map(str, self.shape))
        return (
            f"{size}: max |logit diff| {self.max_diff:.2e} (PyTorch float32 vs float64 "
            f"{self.float32_error:.2e}; |logits| up to {self.max_logit:.3g})"
        )


def parity(
    model: nn.Module, run: Runner, shapes: Sequence[tuple[int, ...]], seed: int
) -> list[Parity]:
    """Compare `run` with `model` (eval mode, no grad) on one random batch per shape; seed `seed`
    + i for the i-th shape. Raises ValueError when an output shape differs."""
    model.eval()
    exact = copy.deepcopy(model).double()
    out: list[Parity] = []
    for i, shape in enumerate(shapes):
        images = random_images(shape, seed + i)
        with torch.no_grad():
            expected = model(images)
            truth = exact(images.double())
        got = run(images)
        if got.shape != expected.shape:
            raise ValueError(
                f"input {tuple(shape)}: the export returned logits {tuple(got.shape)}, PyTorch "
                f"{tuple(expected.shape)}"
            )
        diff = (got.double() - expected.double()).abs().max().item()
        floor = (expected.double() - truth).abs().max().item()
        out.append(Parity(tuple(shape), diff, floor, expected.abs().max().item()))
    return out
