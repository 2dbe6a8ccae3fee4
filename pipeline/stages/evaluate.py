"""Stage `evaluate`: mIoU and per-class IoU of the SupOnly and iMAS checkpoints on the evaluation
list (`evaluate.split`), and the qualitative grid image | ground truth | SupOnly | iMAS.

SupOnly is the `supervised` ablation: the warmup continued without the unlabeled loss for as
many iterations as iMAS, so the two differ only by the semi-supervised part (the warmup alone,
the first part of their shared schedule, has trained less than either)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import torch
import typer

from imas.evaluate import evaluate, predict
from imas.model import build_model
from pipeline.config.options import DataOpt, ParamsOpt, SetOpt, params_or_exit
from pipeline.control.outputs import write_json
from pipeline.control.runtime import setup_runtime
from pipeline.control.tracking import stage_run
from pipeline.reporting.plots import qualitative_grid
from pipeline.training.checkpoints import load_checkpoint
from pipeline.training.loaders import input_normalization, val_loader


def _points(values: list[float]) -> list[float | None]:
    return [None if v != v else round(100 * v, 4) for v in values]  # NaN → null


def command(
    data: DataOpt = Path("data/garments"),
    supervised: Annotated[
        Path, typer.Option(help="SupOnly checkpoint (the `supervised` ablation's)")
    ] = Path("models/ablate/supervised.pt"),
    imas: Annotated[Path, typer.Option(help="iMAS checkpoint")] = Path("models/imas.pt"),
    metrics: Annotated[Path, typer.Option(help="metrics JSON")] = Path("metrics/evaluate.json"),
    figure: Annotated[Path, typer.Option(help="qualitative grid PNG")] = Path(
        "reports/figures/qualitative.png"
    ),
    params_file: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Evaluate SupOnly and iMAS (teacher and student; best and last epoch) on val."""
    params = params_or_exit(params_file, overrides)
    device = setup_runtime(params.runtime, params.seed)
    n_cls = params.model.num_classes
    loader = val_loader(params, data)
    checkpoints = {"supervised": load_checkpoint(supervised), "imas": load_checkpoint(imas)}
    models = {
        # A supervised run has no teacher: its best student is what the report calls SupOnly.
        "supervised": checkpoints["supervised"]["best"]["student"],
        "imas_teacher_best": checkpoints["imas"]["best"]["teacher"],
        "imas_teacher_last": checkpoints["imas"]["last"]["teacher"],
        "imas_student_best": checkpoints["imas"]["best"]["student"],
        "imas_student_last": checkpoints["imas"]["last"]["student"],
    }
    class_names = json.loads((data / "classes.json").read_text())
    ev = params.evaluate
    tiles = {**ev.tiles(), "norm": input_normalization(params, data)}
    with stage_run("evaluate", params, params.train.method) as run:
        results: dict = {"class_names": class_names}
        nets = {}
        for name, state in models.items():
            net = build_model(params.model).to(device)
            net.load_state_dict(state)
            nets[name] = net
            scores = evaluate(net, loader, n_cls, device, progress=params.runtime.progress, **tiles)
            results[name] = {
                "miou": round(100 * scores["miou"], 4),
                "per_class_iou": _points(scores["per_class_iou"]),
            }
            run.log_metrics({f"{name}.miou": results[name]["miou"]})
            typer.echo(f"{name:>18}: mIoU {results[name]['miou']:.2f}")

        images, truths = _first_images(loader, params.evaluate.figure_images)
        preds = {
            "SupOnly": predict(nets["supervised"], images.to(device), **tiles).cpu(),
            "iMAS": predict(nets["imas_teacher_best"], images.to(device), **tiles).cpu(),
        }
        qualitative_grid(figure, images, truths, preds, class_names)
        write_json(metrics, results)
        run.log_artifact(metrics)
        run.log_artifact(figure, "figures")


def _first_images(loader: torch.utils.data.DataLoader, count: int) -> tuple[torch.Tensor, ...]:
    images, truths = [], []
    for batch in loader:
        images.append(batch[0])
        truths.append(batch[1])
        if sum(len(x) for x in images) >= count:
            break
    return torch.cat(images)[:count], torch.cat(truths)[:count]
