"""Stage `split`: labeled.txt / unlabeled.txt for `labeled`, `seed` and `data.split`.

Generated splits are a seeded draw; published ones are the iMAS authors' lists, downloaded and
verified by sha256, then checked against the dataset root (every id must exist in its train
pool, and its val list must equal the published one) so a wrong list fails here, not hours into
training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imas.data.splits import write_list
from pipeline.acquire.prepare import split_lists
from pipeline.config.options import DataOpt, ParamsOpt, SetOpt, params_or_exit
from pipeline.control.outputs import atomic_path
from pipeline.control.tracking import stage_run


def command(
    data: DataOpt = Path("data/garments"),
    out: Annotated[Path, typer.Option(help="folder for labeled.txt and unlabeled.txt")] = Path(
        "data/split"
    ),
    params_file: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Write the labeled and unlabeled id lists of the train pool."""
    params = params_or_exit(params_file, overrides)
    try:
        labeled, unlabeled = split_lists(params, data, params.runtime.progress)
    except ValueError as err:  # DataError (a bad list or root) is one
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from None
    with stage_run("split", params, "data") as run:
        out.mkdir(parents=True, exist_ok=True)
        for name, ids in (("labeled.txt", labeled), ("unlabeled.txt", unlabeled)):
            with atomic_path(out / name) as tmp:
                write_list(tmp, ids)
            run.log_artifact(out / name, "split")
        run.log_metrics({"labeled": len(labeled), "unlabeled": len(unlabeled)})
    typer.echo(f"wrote {out}: {len(labeled)} labeled, {len(unlabeled)} unlabeled")
