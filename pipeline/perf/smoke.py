"""`imas smoke PRESET`: one iMAS step and one evaluation at a preset's full shape, timed.

Proves on any machine (a CPU here) that a paper setting builds, trains and evaluates at paper
size before anyone books GPUs: the preset's model and training section, its crop, a batch of
`--batch` labeled + `--batch` unlabeled synthetic images, and one evaluation of the student on a
`--eval-size` image in the preset's evaluation mode. The backbone starts from random weights
(the pretrained checkpoint does not change the cost). Wall times and the process's peak
resident memory go to a JSON file.
"""

from __future__ import annotations

import json
import platform
import resource
import time
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from imas.evaluate import evaluate
from imas.model import build_model
from imas.train import Hooks, Plan, fit
from pipeline.config.params import Params
from pipeline.config.presets import PRESETS, preset_params
from pipeline.control.outputs import atomic_path, write_json
from pipeline.control.threads import apply_threads


def _peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def smoke(params: Params, batch: int, eval_size: tuple[int, int], seed: int = 0) -> dict[str, Any]:
    """Run one training iteration of `params.train` and one evaluation; return the measurements."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    crop, n_cls = params.aug.crop, params.model.num_classes
    model = build_model(params.model)
    images = torch.randint(0, 256, (batch, 3, crop, crop), dtype=torch.uint8, generator=gen)
    masks = torch.randint(0, n_cls, (batch, crop, crop), generator=gen)
    unlabeled = torch.randint(0, 256, (batch, 3, crop, crop), dtype=torch.uint8, generator=gen)
    h, w = eval_size
    val = [
        (
            torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8, generator=gen),
            torch.randint(0, n_cls, (1, h, w), generator=gen),
        )
    ]
    cfg = params.train.model_copy(update={"epochs": 1, "iters_per_epoch": 1, "eval_every": 1})
    ev = params.evaluate
    eval_seconds: list[float] = []

    def timed_eval(m: torch.nn.Module) -> float:
        start = time.perf_counter()
        out = evaluate(m, val, n_cls, **ev.tiles())["miou"]
        eval_seconds.append(time.perf_counter() - start)
        return out

    start = time.perf_counter()
    fit(
        model,
        [(images, masks)],
        [unlabeled],
        cfg,
        Plan(iters_per_epoch=1, strong_ops=params.aug.strong_ops),
        Hooks(evaluate=timed_eval),
        generator=gen,
    )
    total = time.perf_counter() - start
    return {
        "preset": params.preset,
        "method": cfg.method,
        "backbone": params.model.backbone,
        "crop": crop,
        "batch": f"{batch}+{batch}",
        "eval_size": f"{h}x{w}",
        "eval_mode": ev.mode,
        "parameters": sum(p.numel() for p in model.parameters()),
        "step_seconds": round(total - sum(eval_seconds), 2),
        "eval_seconds": round(eval_seconds[0], 2),
        "peak_rss_mib": round(_peak_rss_mib()),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} CPU, torch {torch.__version__}",
    }


def smoke_table(folder: Path) -> str:
    """Markdown table of every smoke JSON in `folder` (one row per preset, sorted)."""
    rows = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    head = (
        "| preset | backbone | crop | batch | step (s) | evaluation | eval (s) | peak RSS (MiB) |\n"
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |"
    )
    lines = [
        f"| {r['preset']} | {r['backbone']} | {r['crop']} | {r['batch']} | {r['step_seconds']} "
        f"| {r['eval_mode']} {r['eval_size']} | {r['eval_seconds']} | {r['peak_rss_mib']} |"
        for r in rows
    ]
    return "\n".join([head, *lines]) + "\n"


def command(
    preset: Annotated[str, typer.Argument(help=f"one of: {', '.join(PRESETS)}")],
    out: Annotated[Path, typer.Option(help="JSON to write")] = Path("benchmarks/perf/smoke.json"),
    batch: Annotated[int, typer.Option(help="labeled and unlabeled images per step")] = 1,
    crop: Annotated[int | None, typer.Option(help="override the preset's crop (tests)")] = None,
    eval_size: Annotated[tuple[int, int], typer.Option(help="H W of the evaluated image")] = (
        375,
        500,
    ),
    params_file: Annotated[Path, typer.Option("--params", help="base params")] = Path(
        "params.yaml"
    ),
    table: Annotated[
        Path | None, typer.Option(help="rewrite this markdown table from every JSON beside --out")
    ] = None,
) -> None:
    """One iMAS step and one evaluation at a preset's shape on this machine; time and memory."""
    params = preset_params(preset, params_file)
    if crop is not None:
        params = params.model_copy(update={"aug": params.aug.model_copy(update={"crop": crop})})
    apply_threads(params.runtime.threads)
    result = smoke(params, batch, eval_size)
    write_json(out, result)
    if table is not None:
        with atomic_path(table) as tmp:
            tmp.write_text(smoke_table(out.parent))
    typer.echo(
        f"{preset}: step {result['step_seconds']} s, evaluation {result['eval_seconds']} s, "
        f"peak memory {result['peak_rss_mib']} MiB"
    )
