"""`imas export CHECKPOINT`: one network of a training checkpoint as ONNX, torch.export or
TorchScript, written only after it matched PyTorch on random inputs.

The file is written to a temporary sibling, loaded back (ONNX Runtime for ONNX) and run on
seeded random images at every `--check` size (batch 2 at the first, 1 at the others); only if
the largest |logit difference| is within `--tolerance` is it renamed into place. The figures are
printed either way, so a user sees how close the export is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from imas.config import ModelConfig
from imas.data import DataError
from imas.data.normalization import IMAGENET
from imas.model import build_model
from pipeline.control.outputs import atomic_path
from pipeline.control.threads import apply_threads
from pipeline.export.formats import (
    FORMATS,
    ExportError,
    check_available,
    default_out,
    load_export,
    write_export,
)
from pipeline.export.parity import check_shapes, parity, parse_size, random_images
from pipeline.training.checkpoints import load_checkpoint, weight_snapshots
from pipeline.training.loaders import read_normalization

DEFAULT_CHECKS = ["129x129", "97x161"]


def select_weights(
    ckpt: dict[str, Any], net: str, snapshot: str, path: Path
) -> tuple[ModelConfig, dict[str, torch.Tensor], str]:
    """(model config, state dict, what was picked) of a training stage's checkpoint (`model`,
    `best`, `last`) or a `--weights` file (`model`, `student`, `teacher`: the last ones).

    `net` auto takes the teacher when the run has one (the model the paper scores), else the
    student. ValueError naming the file when the checkpoint lacks what was asked."""
    snapshots = weight_snapshots(ckpt)
    if "model" not in ckpt or snapshots is None:
        raise ValueError(
            f"{path}: not a training checkpoint (no model config and weights); export the "
            "output of warmup, train or ablate, or their --weights file"
        )
    if snapshot not in snapshots:
        raise ValueError(
            f"{path}: a --weights file holds the last weights only; use --snapshot last"
        )
    nets = snapshots[snapshot]
    if net == "auto":
        net = "teacher" if nets.get("teacher") is not None else "student"
    if nets.get(net) is None:
        raise ValueError(f"{path}: no {net} weights (a supervised run has no teacher)")
    return ModelConfig.model_validate(ckpt["model"]), nets[net], f"{snapshot} {net}"


def command(
    checkpoint: Annotated[
        Path, typer.Argument(help="a warmup/train/ablate checkpoint or --weights file")
    ],
    fmt: Annotated[str, typer.Option("--format", help=f"one of {', '.join(FORMATS)}")] = "onnx",
    out: Annotated[
        Path | None,
        typer.Option(help="file to write [CHECKPOINT with .onnx, .pt2 or .torchscript.pt]"),
    ] = None,
    net: Annotated[
        str,
        typer.Option(help="auto (the teacher if there is one, else the student), teacher, student"),
    ] = "auto",
    snapshot: Annotated[str, typer.Option(help="last or best (epoch by val mIoU)")] = "last",
    check: Annotated[
        list[str] | None,
        typer.Option(
            help="HEIGHTxWIDTH of a parity input (repeatable; the first is also the export's "
            f"example) [{', '.join(DEFAULT_CHECKS)}]"
        ),
    ] = None,
    tolerance: Annotated[
        float, typer.Option(help="largest |logit difference| accepted (CPU, float32)")
    ] = 1e-4,
    seed: Annotated[int, typer.Option(help="seed of the random parity inputs")] = 0,
    data: Annotated[
        Path | None,
        typer.Option(
            help="a custom dataset's prepared root: its normalization.json is the input's, as "
            "the ONNX metadata states [ImageNet's mean and std]"
        ),
    ] = None,
) -> None:
    """Export a checkpoint's network to ONNX, torch.export or TorchScript, checked against PyTorch.

    Batch, height and width stay free. The export is run on seeded random inputs at each --check
    size and written only if its largest |logit difference| from PyTorch is within --tolerance.
    """
    try:
        check_available(fmt)
        if net not in ("auto", "teacher", "student"):
            raise ValueError(f"--net {net!r}: use auto, teacher or student")
        if snapshot not in ("last", "best"):
            raise ValueError(f"--snapshot {snapshot!r}: use last or best")
        if not tolerance > 0:
            raise ValueError(f"--tolerance {tolerance}: must be above 0")
        sizes = [parse_size(text) for text in check or DEFAULT_CHECKS]
        cfg, state, picked = select_weights(load_checkpoint(checkpoint), net, snapshot, checkpoint)
        norm = IMAGENET if data is None else read_normalization(data)
    except (ExportError, ValueError, FileNotFoundError, DataError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    target = out or default_out(checkpoint, fmt)
    threads = apply_threads("auto").threads
    model = build_model(cfg)
    model.load_state_dict(state)
    model.eval()
    shapes = check_shapes(sizes)
    typer.echo(f"export: {checkpoint} ({picked}, {cfg.backbone}) → {fmt}")
    try:
        with atomic_path(target) as tmp:
            write_export(model, fmt, tmp, random_images(shapes[0], seed), norm)
            results = parity(model, load_export(tmp, fmt, threads), shapes, seed)
            for result in results:
                typer.echo(f"parity {result.line()}")
            worst = max(result.max_diff for result in results)
            if worst > tolerance:
                floor = max(result.float32_error for result in results)
                raise ExportError(
                    f"parity failed: max |logit diff| {worst:.2e} exceeds --tolerance "
                    f"{tolerance:g}; {target} not written (PyTorch's own float32 error on these "
                    f"inputs is {floor:.2e}: if the difference is of that order, the export is "
                    "as exact as float32 allows and a larger --tolerance accepts it)"
                )
    except (ExportError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"export: wrote {target} (max |logit diff| {worst:.2e} ≤ {tolerance:g})")
