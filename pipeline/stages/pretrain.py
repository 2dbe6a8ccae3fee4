"""Stage `pretrain`: the built-in dataset's stand-in for ImageNet weights.

The tiny backbone learns to classify single garments from the pretraining pool (the train-file
glyphs no scene uses, `pretrain.txt` of the dataset root) drawn on the bundled photos as the
scenes draw them (`imas.pretrain`). It runs once; every warmup and training run of the
pipeline and the benchmark starts from its weights (`model.pretrained`), as the paper's runs
all start from one ImageNet checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer

from imas.data import DataError
from imas.data.catalogue import FASHION_MNIST_CLASSES
from imas.data.splits import read_list
from imas.model import build_model
from imas.pretrain import pretrain_backbone
from pipeline.acquire import fashion_mnist
from pipeline.acquire.embedded import load_photos
from pipeline.acquire.garments import render_crops
from pipeline.config.options import DataOpt, ParamsOpt, SetOpt, params_or_exit
from pipeline.control.outputs import atomic_path, write_json
from pipeline.control.runtime import setup_runtime
from pipeline.control.tracking import stage_run


def command(
    data: DataOpt = Path("data/garments"),
    out: Annotated[Path, typer.Option(help="backbone state dict to write")] = Path(
        "models/pretrained.pt"
    ),
    metrics: Annotated[Path, typer.Option(help="metrics JSON")] = Path("metrics/pretrain.json"),
    history: Annotated[Path, typer.Option(help="per-epoch CSV")] = Path(
        "metrics/pretrain_history.csv"
    ),
    params_file: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Pretrain the backbone by garment classification on the dataset's pretraining pool."""
    params = params_or_exit(params_file, overrides)
    cfg, garments = params.pretrain, params.data.garments
    if cfg is None:
        # The paper presets start from ImageNet weights (model.pretrained): nothing to train,
        # but the stage still ends the pipeline's one graph with its (empty) output.
        with atomic_path(out) as tmp, tmp.open("wb") as fh:
            torch.save({}, fh)
        write_json(metrics, {"images": 0})
        with atomic_path(history) as tmp:
            tmp.write_text("epoch,loss,accuracy\n", encoding="utf-8")
        typer.echo(f"pretrain: null in params, nothing to pretrain; wrote an empty {out}")
        return
    if garments is None or params.dataset != "garments":
        typer.echo("error: the pretrain section needs dataset: garments (set pretrain: null "
                   "for other datasets)", err=True)  # fmt: skip
        raise typer.Exit(code=2)
    if params.model.backbone != "tiny":
        typer.echo(f"error: pretrain trains the tiny backbone, not {params.model.backbone!r}",
                   err=True)  # fmt: skip
        raise typer.Exit(code=2)
    try:
        glyph_ids = [int(g) for g in read_list(data / "pretrain.txt")]
        files = fashion_mnist.locate(Path(garments.downloads), garments.urls)
        glyphs, labels = fashion_mnist.load(files, "train")
    except (DataError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from None
    if cfg.images is not None:
        glyph_ids = glyph_ids[: cfg.images]
    setup_runtime(params.runtime, cfg.seed)
    images, targets = render_crops(glyph_ids, glyphs, labels, load_photos(), cfg.crop, cfg.seed)
    backbone = build_model(params.model.model_copy(update={"pretrained": None})).backbone
    with stage_run("pretrain", params, "pretrain") as run:
        rows = pretrain_backbone(
            backbone,
            images,
            targets,
            classes=len(FASHION_MNIST_CLASSES),
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            seed=cfg.seed,
            log=lambda row, epoch: run.log_metrics(
                {f"epoch/{k}": v for k, v in row.items()}, epoch
            ),
            progress=params.runtime.progress,
        )
        summary = {
            "images": len(glyph_ids),
            "accuracy": round(100 * rows[-1]["accuracy"], 4),
            "loss": round(rows[-1]["loss"], 6),
        }
        with atomic_path(out) as tmp, tmp.open("wb") as fh:
            torch.save(backbone.state_dict(), fh)
        write_json(metrics, summary)
        with atomic_path(history) as tmp:
            lines = [f"{i},{r['loss']:.6f},{100 * r['accuracy']:.4f}" for i, r in enumerate(rows)]
            tmp.write_text("epoch,loss,accuracy\n" + "\n".join(lines) + "\n", encoding="utf-8")
        run.log_metrics(summary)
        run.log_artifact(out, "checkpoints")
    typer.echo(f"pretrain: {len(glyph_ids)} crops, training accuracy {summary['accuracy']:.2f}%")
