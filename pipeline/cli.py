"""The `imas` command: one sub-command per DVC stage.

A stage's module is imported only when that stage runs: importing all of them (torch,
torchvision, pandas, matplotlib) took 4–7 s here before `imas --help` could print or `imas
download` could start, and the download, split and report stages need no torch at all. The
listing of `imas --help` uses the summaries below, which tests/stage/test_cli.py keeps equal to each
command's docstring.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, NamedTuple

# Before torch loads: with 2 cores, OpenMP spin-waiting threads slowed training a lot.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import click
import typer
from typer.core import TyperGroup


class Entry(NamedTuple):
    module: str
    attribute: str  # a command function, or a Typer app for a group of commands
    summary: str  # the first paragraph of its docstring, for the listing


STAGES: dict[str, Entry] = {
    "download": Entry(
        "pipeline.stages.download",
        "command",
        "Create the dataset root: ImageSets/Segmentation lists, classes.json, images and masks.",
    ),
    "split": Entry(
        "pipeline.stages.split",
        "command",
        "Write the labeled and unlabeled id lists of the train pool.",
    ),
    "pretrain": Entry(
        "pipeline.stages.pretrain",
        "command",
        "Pretrain the backbone by garment classification on the dataset's pretraining pool.",
    ),
    "warmup": Entry(
        "pipeline.stages.train",
        "warmup",
        "Train the student on labeled images only, with the `warmup` section of params.",
    ),
    "train": Entry(
        "pipeline.stages.train",
        "train",
        "Teacher–student training with every adaptive part that params switch on.",
    ),
    "ablate": Entry(
        "pipeline.stages.train",
        "ablate",
        "Train with the `train` section overridden by `ablations.NAME`.",
    ),
    "evaluate": Entry(
        "pipeline.stages.evaluate",
        "command",
        "Evaluate SupOnly and iMAS (teacher and student; best and last epoch) on val.",
    ),
    "report": Entry(
        "pipeline.stages.report",
        "command",
        "Write results.md, metrics.json, results.csv and the figures from the metrics files.",
    ),
    "predict": Entry(
        "pipeline.stages.predict",
        "command",
        "Masks of images from a trained checkpoint or an MLflow model: index PNGs and overlays.",
    ),
    "verdict": Entry(
        "pipeline.stages.verdict",
        "command",
        "Judge the benchmark grid by the rules fixed before it ran: verdict JSON, a paper-style "
        "table with 95 % intervals over seeds, and forest, premise and easiness figures.",
    ),
    "grid": Entry(
        "pipeline.control.grid",
        "command",
        "Run a DVC benchmark's out-of-date stages JOBS at a time and record them in dvc.lock.",
    ),
    "plots-assets": Entry(
        "pipeline.reporting.plot_assets",
        "command",
        "Download vega, vega-lite and vega-embed (pinned, checksum-verified) for the offline plots "
        "page: `dvc plots show --html-template pipeline/reporting/plots_page.html --out "
        "reports/plots`.",
    ),
    "preset": Entry(
        "pipeline.config.presets",
        "command",
        "Switch params.yaml to a paper setting; `dvc exp run -S labeled=N` then picks the column.",
    ),
    "export": Entry(
        "pipeline.export.command",
        "command",
        "Export a checkpoint's network to ONNX, torch.export or TorchScript, checked against "
        "PyTorch.",
    ),
    "smoke": Entry(
        "pipeline.perf.smoke",
        "command",
        "One iMAS step and one evaluation at a preset's shape on this machine; time and memory.",
    ),
    "perf": Entry(
        "pipeline.perf.cli",
        "app",
        "Performance benchmarks of this machine (benchmarks/perf/benchmarks.md): hardness, "
        "augmentation, step cost, profile, end to end.",
    ),
}


def command_for(name: str) -> Any:
    """The click command of `name`, importing its module."""
    entry = STAGES[name]
    target: Any = getattr(importlib.import_module(entry.module), entry.attribute)
    if isinstance(target, typer.Typer):
        command = typer.main.get_command(target)
        command.name = name
        return command
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command(name)(target)
    return typer.main.get_command(single)


class LazyStages(TyperGroup):
    """A group whose commands are imported when invoked, listed from their summaries."""

    _listing = False

    # Typer runs on its own copy of click: its types are not the `click` package's, so the
    # overrides take Any.
    def list_commands(self, ctx: Any) -> list[str]:
        return list(STAGES)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in STAGES:
            return None
        if self._listing:  # `imas --help`: a stand-in carrying the summary is enough
            return click.Command(cmd_name, help=STAGES[cmd_name].summary)
        return command_for(cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    cls=LazyStages,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """iMAS semi-supervised segmentation: the stages of the DVC pipeline."""


if __name__ == "__main__":
    app()
