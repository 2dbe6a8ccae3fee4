"""Stage `report`: results.md, metrics.json, results.csv and the figures of the default
pipeline, from the metrics files the training and evaluation stages wrote, logged to MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.config.options import ParamsOpt, SetOpt, params_or_exit
from pipeline.config.paper_numbers import preset_published
from pipeline.control.tracking import stage_run
from pipeline.reporting.inputs import ReportInputError
from pipeline.reporting.report import header_facts, published_block, write_report
from pipeline.reporting.report_inputs import load_inputs


def command(
    metrics: Annotated[Path, typer.Option(help="folder the training stages wrote")] = Path(
        "metrics"
    ),
    out: Annotated[Path, typer.Option(help="report folder")] = Path("reports"),
    params_file: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Write results.md, metrics.json, results.csv and the figures from the metrics files."""
    params = params_or_exit(params_file, overrides)
    try:
        # Ablations come from params, so a missing one is an error and a stale file is ignored.
        inputs = load_inputs(metrics, list(params.ablations))
    except ReportInputError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    blocks: list[str] = []
    if params.preset is not None:
        miou = preset_published(params.preset).miou
        blocks = published_block(inputs, params.preset, params.labeled, miou)
    with stage_run("report", params, "report") as run:
        values = write_report(inputs, out, header_facts(params), blocks)
        run.log_metrics(values)
        for name in ("results.md", "results.csv", "metrics.json"):
            run.log_artifact(out / name)
        for stem in ("training_curves", "easiness", "ablation_bars", "hardness"):
            run.log_artifact(out / "figures" / f"{stem}.png", "figures")
    typer.echo(
        f"report: iMAS {values['imas']:.2f} vs SupOnly {values['supervised']:.2f} "
        f"({values['gain_over_supervised']:+.2f}); wrote {out / 'results.md'}"
    )
