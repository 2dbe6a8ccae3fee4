"""Typer options shared by the stage commands, and the params loader they all use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.params import Params, ParamsError, load_params

ParamsOpt = Annotated[
    Path, typer.Option("--params", help="params.yaml to read (validated before any work)")
]
DataOpt = Annotated[Path, typer.Option(help="dataset root in VOC layout")]
SplitOpt = Annotated[Path, typer.Option(help="folder with labeled.txt and unlabeled.txt")]


def params_or_exit(path: Path) -> Params:
    """Validated params, or exit 2 with the field and value named and nothing written."""
    try:
        return load_params(path)
    except ParamsError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
