"""Writing a segmentation network in a deployable format and loading it back to run it.

Three formats, each with the batch, height and width left free (the model interpolates its
logits to the input size, and ASPP's image pooling is adaptive, so any size works):

* `onnx`: torch's torch.export-based ONNX exporter (`dynamo=True`, needs onnxscript), one file
  with the weights inside. The legacy TorchScript-based exporter also works on this model, but
  torch 2.14 marks it deprecated; the torch.export one is the exporter torch maintains.
* `torch-export`: `torch.export.export` saved as a `.pt2` archive (`torch.export.load`). Its
  guards refuse sizes at which a stride-`output_stride` feature map would be 1 pixel wide (torch
  specialises sizes 0 and 1), e.g. below 9 pixels for the tiny model at output stride 8.
* `torchscript`: `torch.jit.trace` (shape reads are traced, so sizes stay free), for libtorch
  (C++) users; torch 2.14 deprecates TorchScript in favour of torch.export.

The input is `image`, float32 [B, 3, H, W], RGB normalised as in training ((x / 255 − mean) / std
with ImageNet's mean and std, or a custom dataset's own); the output is `logits`, float32 [B,
num_classes, H, W].
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from imas.data.normalization import IMAGENET, Normalization

Format = Literal["onnx", "torch-export", "torchscript"]
FORMATS: tuple[str, ...] = get_args(Format)
SUFFIX: dict[str, str] = {"onnx": ".onnx", "torch-export": ".pt2", "torchscript": ".torchscript.pt"}
INPUT, OUTPUT = "image", "logits"


def input_note(norm: Normalization) -> str:
    """What the ONNX file tells its users about the input (metadata_props `imas.input`)."""
    mean = ", ".join(f"{v:.6g}" for v in norm.mean)
    std = ", ".join(f"{v:.6g}" for v in norm.std)
    return (
        f"float32 [batch, 3, height, width], RGB, (x / 255 - mean) / std with mean ({mean}) "
        f"and std ({std}); output logits [batch, classes, height, width]"
    )


# Packages each format needs beyond torch (import name → what pip installs).
NEEDS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx", "onnxscript", "onnxruntime"),
    "torch-export": (),
    "torchscript": (),
}


class ExportError(RuntimeError):
    """The network could not be exported or its export does not match; the message says why."""


def unknown_format(fmt: str) -> ExportError:
    return ExportError(f"unknown format {fmt!r} (have: {', '.join(FORMATS)})")


def check_available(fmt: str) -> None:
    """Fail before any work when `fmt` is unknown or a package it needs is missing."""
    if fmt not in FORMATS:
        raise unknown_format(fmt)
    missing = [name for name in NEEDS[fmt] if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(
            f"--format {fmt} needs {', '.join(missing)}: pip install 'imas[export]' "
            "(make setup installs it)"
        )


def default_out(checkpoint: Path, fmt: str) -> Path:
    """`models/imas.pt` → `models/imas.onnx` (`.pt2`, `.torchscript.pt`)."""
    return checkpoint.with_name(checkpoint.name.removesuffix(checkpoint.suffix) + SUFFIX[fmt])


@contextmanager
def _jit_quietly() -> Iterator[None]:
    """torch 2.14 warns that TorchScript is deprecated on every trace, save and load; the module
    docstring and the README say so once."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated")
        yield


def _dims() -> dict[int, torch.export.Dim]:
    # Dim.DYNAMIC, not named Dims with bounds: the valid heights are not a range (see the module
    # docstring), and torch derives the bounds it can prove.
    return {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}


def write_export(
    model: nn.Module, fmt: str, path: Path, example: Tensor, norm: Normalization = IMAGENET
) -> None:
    """Export `model` (in eval mode) traced on `example` ([B ≥ 2, 3, H, W]: a batch of 1 would
    fix the batch size) to `path` in `fmt`; an ONNX file states the input's `norm`."""
    if example.shape[0] < 2:
        raise ValueError(f"example batch {example.shape[0]}: use 2 or more, or it is fixed to 1")
    model.eval()
    try:
        if fmt == "onnx":
            program = torch.onnx.export(
                model,
                (example,),
                None,
                dynamo=True,
                input_names=[INPUT],
                output_names=[OUTPUT],
                # String names: the ONNX graph's free dimensions are called so.
                dynamic_shapes=({0: "batch", 2: "height", 3: "width"},),
                verbose=False,
            )
            assert program is not None  # dynamo=True always returns the program
            program.model.metadata_props["imas.input"] = input_note(norm)
            # One file: the weights inside (protobuf's 2 GB limit; R101 is 0.24 GB).
            program.save(str(path), external_data=False)
        elif fmt == "torch-export":
            exported = torch.export.export(model, (example,), dynamic_shapes=(_dims(),))
            with path.open("wb") as fh:  # a file object: torch.export.save wants .pt2 names
                torch.export.save(exported, fh)
        elif fmt == "torchscript":
            with _jit_quietly():
                torch.jit.save(torch.jit.trace(model, (example,)), str(path))
        else:
            raise unknown_format(fmt)
    except ExportError:
        raise
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(
            f"{fmt} export at {tuple(example.shape)} failed: {type(err).__name__}: {first}"
        ) from err


Runner = Callable[[Tensor], Tensor]


def load_export(path: Path, fmt: str, threads: int = 1) -> Runner:
    """A function running the exported file on a float32 batch, returning its logits on CPU:
    ONNX Runtime (CPU provider, `threads` intra-op threads) for ONNX, torch for the others."""
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def run_onnx(images: Tensor) -> Tensor:
            (logits,) = session.run([OUTPUT], {INPUT: images.numpy()})
            return torch.from_numpy(logits)

        return run_onnx
    if fmt == "torch-export":
        with path.open("rb") as fh:
            module = torch.export.load(fh).module()
    elif fmt == "torchscript":
        with _jit_quietly():
            module = torch.jit.load(str(path), map_location="cpu")
    else:
        raise unknown_format(fmt)

    def run_torch(images: Tensor) -> Tensor:
        with torch.no_grad():
            return module(images)

    return run_torch
