"""The three training stages, one body (`pipeline.training.runner.run_training`) each:

* `warmup`: supervised training on the labeled split, the first part of the poly schedule;
* `train`: iMAS (or mean teacher) continuing it, from the `train` section of params;
* `ablate NAME`: the same with `ablations.NAME` over the `train` section (SupOnly is the
  `supervised` ablation, the warmup continued without the unlabeled loss).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.config.options import DataOpt, InitOpt, ParamsOpt, SetOpt, SplitOpt, params_or_exit
from pipeline.config.params import ParamsError, flatten
from pipeline.training.runner import run_training

OutOpt = Annotated[Path, typer.Option(help="checkpoint to write")]
MetricsOpt = Annotated[Path, typer.Option(help="metrics JSON")]
HistoryOpt = Annotated[Path, typer.Option(help="per-epoch CSV")]
PremiseOpt = Annotated[
    Path | None,
    typer.Option(help="CSV of easiness vs pseudo-label mIoU of unlabeled images per evaluation"),
]
ScoresOpt = Annotated[
    Path | None,
    typer.Option(help="npz of the last model's per-image test confusions (adds test_miou)"),
]
WeightsOpt = Annotated[
    Path | None,
    typer.Option(help="the last student and teacher weights alone (to commit and re-score)"),
]


def _echo_best(summary: dict | None, what: str) -> None:
    if summary is not None:  # None: a rank other than 0 of a DDP run
        typer.echo(f"{what} val mIoU {summary['miou']:.2f} at epoch {summary['best_epoch']}")


def warmup(
    data: DataOpt = Path("data/garments"),
    split: SplitOpt = Path("data/split"),
    out: OutOpt = Path("models/warmup.pt"),
    metrics: MetricsOpt = Path("metrics/warmup.json"),
    history: HistoryOpt = Path("metrics/warmup_history.csv"),
    scores: ScoresOpt = None,
    params_file: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Train the student on labeled images only, with the `warmup` section of params."""
    params = params_or_exit(params_file, overrides)
    summary = run_training(
        "warmup", params, params.warmup, data=data, split=split, out=out, metrics=metrics,
        history=history, scores=scores,
    )  # fmt: skip
    _echo_best(summary, "warmup: best")


def train(
    data: DataOpt = Path("data/garments"),
    split: SplitOpt = Path("data/split"),
    init: InitOpt = Path("models/warmup.pt"),
    out: OutOpt = Path("models/imas.pt"),
    metrics: MetricsOpt = Path("metrics/train.json"),
    history: HistoryOpt = Path("metrics/train_history.csv"),
    hardness: Annotated[
        Path | None, typer.Option(help="per-image hardness CSV (epoch,hardness); none if unset")
    ] = None,
    premise: PremiseOpt = None,
    scores: ScoresOpt = None,
    weights: WeightsOpt = None,
    params_file: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Teacher–student training with every adaptive part that params switch on."""
    params = params_or_exit(params_file, overrides)
    summary = run_training(
        "train", params, params.train, data=data, split=split, out=out, metrics=metrics,
        history=history, init=init if params.train.init != "scratch" else None,
        hardness=hardness, premise=premise, scores=scores, weights=weights,
    )  # fmt: skip
    _echo_best(summary, "train: best teacher")


def ablate(
    name: Annotated[str, typer.Argument(help="a key of `ablations` in params.yaml")],
    data: DataOpt = Path("data/garments"),
    split: SplitOpt = Path("data/split"),
    init: InitOpt = Path("models/warmup.pt"),
    out: Annotated[Path | None, typer.Option(help="checkpoint [models/ablate/NAME.pt]")] = None,
    metrics: Annotated[Path | None, typer.Option(help="JSON [metrics/ablate/NAME.json]")] = None,
    history: Annotated[
        Path | None, typer.Option(help="per-epoch CSV [metrics/ablate/NAME_history.csv]")
    ] = None,
    premise: PremiseOpt = None,
    scores: ScoresOpt = None,
    weights: WeightsOpt = None,
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
        f"ablate:{name}", params, cfg, data=data, split=split,
        out=out or Path(f"models/ablate/{name}.pt"),
        metrics=metrics or Path(f"metrics/ablate/{name}.json"),
        history=history or Path(f"metrics/ablate/{name}_history.csv"),
        init=init if cfg.init != "scratch" else None,
        param_overrides={**switches, "ablation": name},
        premise=premise, scores=scores, weights=weights,
    )  # fmt: skip
    _echo_best(summary, f"ablate {name}: best teacher")
