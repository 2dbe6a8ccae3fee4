"""Typer options shared by the stage commands, and the params loader they all use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.config.params import Params, ParamsError, load_params

ParamsOpt = Annotated[
    Path, typer.Option("--params", help="params.yaml to read (validated before any work)")
]
DataOpt = Annotated[Path, typer.Option(help="dataset root in VOC layout")]
SplitOpt = Annotated[Path, typer.Option(help="folder with labeled.txt and unlabeled.txt")]
InitOpt = Annotated[Path, typer.Option(help="warmup checkpoint (used when train.init is 'warmup')")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="override one param, KEY=VALUE with a dotted key (repeatable), as dvc exp run -S",
    ),
]


def params_or_exit(path: Path, overrides: list[str] | None = None) -> Params:
    """Validated params, or exit 2 with the field and value named and nothing written."""
    try:
        return load_params(path, overrides or ())
    except ParamsError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
