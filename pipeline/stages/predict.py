"""`imas predict`: a trained model applied to new images. Not a DVC stage: it reads what the
pipeline trained (a checkpoint, or the MLflow model the train stage registered) and writes
wherever `--out` says."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import torch
import typer
from tqdm import tqdm

from imas.data import DataError
from imas.data.datasets import read_image
from imas.predict import Classes, Segmenter, same_size_batches
from pipeline.config.options import ParamsOpt, SetOpt, params_or_exit
from pipeline.config.params import Params
from pipeline.control.runtime import setup_runtime
from pipeline.inference.inputs import InputError, Item, expand
from pipeline.inference.outputs import staged, write_mask, write_overlay
from pipeline.inference.sources import Pick, SourceError, from_checkpoint

OVERLAYS = "overlays"


class BadImage(RuntimeError):
    """An image could not be read and `--on-error fail` was given."""


def _load(
    checkpoint: Path | None, model: str | None, weights: Pick, params: Params, data: Path
) -> tuple[Segmenter, Classes, str]:
    if model is None:
        return from_checkpoint(checkpoint or Path("models/imas.pt"), weights, params, data)
    from pipeline.control.tracking import TrackingError, check_reachable, tracking_uri
    from pipeline.inference.mlflow_model import load_model_uri

    uri = tracking_uri()
    try:
        check_reachable(uri)
    except TrackingError as err:
        raise SourceError(str(err)) from None
    segmenter, classes = load_model_uri(model, uri)
    return segmenter, classes, model


def command(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="images, folders of images (not recursive) or list files (.txt, .lst: one "
            "image path a line, relative to the list file)",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="folder for the masks <id>.png and overlays/<id>.png")
    ] = Path("predictions"),
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="a training stage's checkpoint (default: models/imas.pt)"),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="an MLflow model instead, e.g. models:/imas-garments/1 (its own "
            "inference and classes; `evaluate` params are not read)"
        ),
    ] = None,
    weights: Annotated[
        Pick,
        typer.Option(help="weights of --checkpoint; auto: best teacher, else best student"),
    ] = "auto",
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1, help="images of one size per forward pass (default: evaluate.batch_size)"
        ),
    ] = None,
    on_error: Annotated[
        Literal["skip", "fail"],
        typer.Option(help="an unreadable image: skip it with a warning, or fail (nothing written)"),
    ] = "fail",
    overlays: Annotated[
        bool, typer.Option(help="also write overlays/<id>.png: mask over image, with a legend")
    ] = True,
    data: Annotated[
        Path | None,
        typer.Option(
            help="with --checkpoint: the dataset root whose classes and normalisation it was "
            "trained with (default: data/<dataset>; read for a custom dataset only)"
        ),
    ] = None,
    params_file: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Masks of images from a trained checkpoint or an MLflow model: index PNGs and overlays.

    Each image gets `<out>/<id>.png`, a palette PNG whose pixel values are class indices in
    the classes' colours (VOC's, or a custom class list's), and `<out>/overlays/<id>.png`, the
    mask blended over the image with a legend of the classes present; `<id>` is the image's
    file name without suffix. A checkpoint is applied as `evaluate.mode` (whole or sliding,
    `window`, `stride`, `tiling`) says, with the classes and normalisation of `dataset` (a
    custom one's from --data); an MLflow model carries all of them. Images of one size are
    batched.
    The outputs appear when every image is done (staged in a hidden folder in `out`), so a
    failed or interrupted run changes nothing there.
    """
    params = params_or_exit(params_file, overrides)
    if checkpoint is not None and model is not None:
        typer.echo("error: predict: give --checkpoint or --model, not both", err=True)
        raise typer.Exit(code=2)
    try:
        items = expand(inputs)
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {out} is a file, not a folder")
    except InputError as err:
        typer.echo(f"error: predict: {err}", err=True)
        raise typer.Exit(code=2) from None
    device = setup_runtime(params.runtime, params.seed)
    try:
        root = data if data is not None else Path("data") / params.dataset
        segmenter, classes, source = _load(checkpoint, model, weights, params, root)
    except SourceError as err:
        typer.echo(f"error: predict: {err}", err=True)
        raise typer.Exit(code=1) from None
    segmenter.to(device)
    skipped: list[str] = []
    bar = tqdm(total=len(items), desc="predict", unit="image", disable=not params.runtime.progress)

    def decoded() -> Iterator[tuple[Item, torch.Tensor]]:
        for item in items:
            try:
                yield item, read_image(item.path)
            except DataError as err:
                if on_error == "fail":
                    raise BadImage(str(err)) from None
                skipped.append(str(err))
                tqdm.write(f"warning: predict: skipped {err}", file=sys.stderr)
                bar.update(1)

    written = 0
    try:
        with bar, staged(out) as stage:
            if overlays:
                (stage / OVERLAYS).mkdir()
            size = batch_size or params.evaluate.batch_size
            for batch in same_size_batches(decoded(), lambda pair: tuple(pair[1].shape), size):
                images = torch.stack([image for _, image in batch])
                labels = segmenter(images.to(device)).cpu().numpy()
                for (item, image), mask in zip(batch, labels, strict=True):
                    write_mask(stage / f"{item.id}.png", mask, classes)
                    if overlays:
                        picture = image.permute(1, 2, 0).numpy()
                        write_overlay(stage / OVERLAYS / f"{item.id}.png", picture, mask, classes)
                written += len(batch)
                bar.update(len(batch))
            if not written:
                raise BadImage(f"none of the {len(items)} images could be read")
    except BadImage as err:
        typer.echo(
            f"error: predict: {err}; nothing written to {out}"
            + (" (--on-error skip leaves such images out)" if on_error == "fail" else ""),
            err=True,
        )
        raise typer.Exit(code=1) from None
    more = f", {len(skipped)} unreadable skipped" if skipped else ""
    typer.echo(f"predict: {written} masks in {out} from {source}{more}")
