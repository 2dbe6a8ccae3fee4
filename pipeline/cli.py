"""The `imas` command: one sub-command per DVC stage."""

from __future__ import annotations

import os

# Before torch loads: with 2 cores, OpenMP spin-waiting threads slowed training a lot.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import typer

from pipeline import (
    ablate,
    benchmark,
    download,
    evaluate,
    paper_table,
    plot_assets,
    presets,
    report,
    smoke,
    split,
    train,
    warmup,
)
from pipeline.perf import cli as perf_cli

app = typer.Typer(
    help="iMAS semi-supervised segmentation: the stages of the DVC pipeline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("download")(download.command)
app.command("split")(split.command)
app.command("warmup")(warmup.command)
app.command("train")(train.command)
app.command("ablate")(ablate.command)
app.command("evaluate")(evaluate.command)
app.command("report")(report.command)
app.command("benchmark")(benchmark.command)
app.command("paper-table")(paper_table.command)
app.command("plots-assets")(plot_assets.command)
app.command("preset")(presets.command)
app.command("smoke")(smoke.command)
app.add_typer(perf_cli.app, name="perf")

if __name__ == "__main__":
    app()
