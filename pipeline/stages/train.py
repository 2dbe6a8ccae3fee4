"""Stage `train`: iMAS (or the mean-teacher baseline) from the `train` section of params."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.config.options import DataOpt, InitOpt, ParamsOpt, SetOpt, SplitOpt, params_or_exit
from pipeline.training.runner import run_training


def command(
    data: DataOpt = Path("data/garments"),
    split: SplitOpt = Path("data/split"),
    init: InitOpt = Path("models/warmup.pt"),
    out: Annotated[Path, typer.Option(help="checkpoint to write")] = Path("models/imas.pt"),
    metrics: Annotated[Path, typer.Option(help="metrics JSON")] = Path("metrics/train.json"),
    history: Annotated[Path, typer.Option(help="per-epoch CSV")] = Path(
        "metrics/train_history.csv"
    ),
    hardness: Annotated[
        Path | None, typer.Option(help="per-image hardness CSV (epoch,hardness); none if unset")
    ] = None,
    premise: Annotated[
        Path | None,
        typer.Option(
            help="CSV of easiness vs pseudo-label mIoU of unlabeled images per evaluation"
        ),
    ] = None,
    scores: Annotated[
        Path | None,
        typer.Option(help="npz of the last model's per-image test confusions (adds test_miou)"),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(help="the last student and teacher weights alone (to commit and re-score)"),
    ] = None,
    params_file: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Teacher–student training with every adaptive part that params switch on."""
    params = params_or_exit(params_file, overrides)
    summary = run_training(
        "train",
        params,
        params.train,
        data=data,
        split=split,
        out=out,
        metrics=metrics,
        history=history,
        init=init if params.train.init != "scratch" else None,
        hardness=hardness,
        premise=premise,
        scores=scores,
        weights=weights,
    )
    if summary is not None:  # None: a rank other than 0 of a DDP run
        typer.echo(
            f"train: best teacher val mIoU {summary['miou']:.2f} at epoch {summary['best_epoch']}"
        )
