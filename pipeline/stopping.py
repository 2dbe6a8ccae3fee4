"""How a training stage stops early: on a NaN or Inf with an error naming the iteration and
the resume checkpoint that is kept. No output is written, and `tracking.stage_run` closes the
MLflow run as FAILED.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from imas.checkpoint import NonFiniteError


@contextmanager
def training_stops(stage: str, resume_file: Path) -> Iterator[None]:
    """`NonFiniteError` becomes exit code 1 with a one-line message on stderr instead of a
    traceback, saying whether a resume checkpoint is kept."""
    try:
        yield
    except NonFiniteError as err:
        kept = (
            f"the last good resume checkpoint {resume_file} is kept"
            if resume_file.exists()
            else "no resume checkpoint exists (runtime.checkpoint_every: 0)"
        )
        typer.echo(f"error: {stage}: {err}; {kept}", err=True)
        raise typer.Exit(1) from None
