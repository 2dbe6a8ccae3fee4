"""Stage `split`: labeled.txt / unlabeled.txt for the top-level `labeled` count and `seed`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imas.data.splits import make_split, read_list, write_list
from pipeline.options import DataOpt, ParamsOpt, SetOpt, params_or_exit
from pipeline.outputs import atomic_path
from pipeline.tracking import stage_run


def command(
    data: DataOpt = Path("data/embedded"),
    out: Annotated[Path, typer.Option(help="folder for labeled.txt and unlabeled.txt")] = Path(
        "data/split"
    ),
    params_file: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Draw `labeled` ids from the train pool with `seed`; the rest is unlabeled."""
    params = params_or_exit(params_file, overrides)
    pool = read_list(data / "ImageSets" / "Segmentation" / "train.txt")
    labeled, unlabeled = make_split(pool, params.labeled, params.seed)
    with stage_run("split", params, "data") as run:
        out.mkdir(parents=True, exist_ok=True)
        for name, ids in (("labeled.txt", labeled), ("unlabeled.txt", unlabeled)):
            with atomic_path(out / name) as tmp:
                write_list(tmp, ids)
            run.log_artifact(out / name, "split")
        run.log_metrics({"labeled": len(labeled), "unlabeled": len(unlabeled)})
    typer.echo(f"wrote {out}: {len(labeled)} labeled, {len(unlabeled)} unlabeled")
