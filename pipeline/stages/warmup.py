"""Stage `warmup`: supervised training on the labeled split (the SupOnly baseline).

Its checkpoint also initialises the iMAS student and teacher (`train.init: warmup`), since the
built-in dataset has no ImageNet weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.config.options import DataOpt, ParamsOpt, SetOpt, SplitOpt, params_or_exit
from pipeline.training.runner import run_training


def command(
    data: DataOpt = Path("data/garments"),
    split: SplitOpt = Path("data/split"),
    out: Annotated[Path, typer.Option(help="checkpoint to write")] = Path("models/warmup.pt"),
    metrics: Annotated[Path, typer.Option(help="metrics JSON")] = Path("metrics/warmup.json"),
    history: Annotated[Path, typer.Option(help="per-epoch CSV")] = Path(
        "metrics/warmup_history.csv"
    ),
    scores: Annotated[
        Path | None,
        typer.Option(help="npz of the last model's per-image test confusions (adds test_miou)"),
    ] = None,
    params_file: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Train the student on labeled images only, with the `warmup` section of params."""
    params = params_or_exit(params_file, overrides)
    summary = run_training(
        "warmup",
        params,
        params.warmup,
        data=data,
        split=split,
        out=out,
        metrics=metrics,
        history=history,
        scores=scores,
    )
    if summary is not None:  # None: a rank other than 0 of a DDP run
        typer.echo(f"warmup: best val mIoU {summary['miou']:.2f} at epoch {summary['best_epoch']}")
