"""Stage `download`: bring the dataset to disk in VOC layout.

For the built-in `embedded` dataset nothing is downloaded: scenes are generated from MNIST digits
and scikit-image's bundled photos, deterministically from `data.embedded_seed`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imas.data.embedded import generate
from pipeline.options import ParamsOpt, SetOpt, params_or_exit
from pipeline.tracking import stage_run


def command(
    out: Annotated[Path, typer.Option(help="dataset root to (re)create")] = Path("data/embedded"),
    params_file: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Create the dataset in VOC layout (JPEGImages/, SegmentationClass/, ImageSets/)."""
    params = params_or_exit(params_file, overrides)
    with stage_run("download", params, "data") as run:
        summary = generate(
            out, params.data.embedded, params.data.embedded_seed, progress=params.runtime.progress
        )
        numbers = {k: v for k, v in summary.items() if isinstance(v, int | float)}
        run.log_metrics(numbers)
    typer.echo(f"wrote {out}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))
