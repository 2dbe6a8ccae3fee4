"""Stage `ablate`: the train stage with one named set of switches from `ablations` applied."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.config.options import DataOpt, InitOpt, ParamsOpt, SetOpt, SplitOpt, params_or_exit
from pipeline.config.params import ParamsError, flatten
from pipeline.training.runner import run_training


def command(
    name: Annotated[str, typer.Argument(help="a key of `ablations` in params.yaml")],
    data: DataOpt = Path("data/garments"),
    split: SplitOpt = Path("data/split"),
    init: InitOpt = Path("models/warmup.pt"),
    out: Annotated[Path | None, typer.Option(help="checkpoint [models/ablate/NAME.pt]")] = None,
    metrics: Annotated[Path | None, typer.Option(help="JSON [metrics/ablate/NAME.json]")] = None,
    history: Annotated[
        Path | None, typer.Option(help="per-epoch CSV [metrics/ablate/NAME_history.csv]")
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
    """Train with the `train` section overridden by `ablations.NAME`."""
    params = params_or_exit(params_file, overrides)
    try:
        cfg = params.ablation(name)
    except ParamsError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    switches = flatten(cfg.model_dump(mode="json"), prefix="train.")
    summary = run_training(
        f"ablate:{name}",
        params,
        cfg,
        data=data,
        split=split,
        out=out or Path(f"models/ablate/{name}.pt"),
        metrics=metrics or Path(f"metrics/ablate/{name}.json"),
        history=history or Path(f"metrics/ablate/{name}_history.csv"),
        init=init if cfg.init != "scratch" else None,
        param_overrides={**switches, "ablation": name},
        premise=premise,
        scores=scores,
        weights=weights,
    )
    if summary is not None:  # None: a rank other than 0 of a DDP run
        typer.echo(f"ablate {name}: best teacher val mIoU {summary['miou']:.2f}")
