"""`imas perf ...`: each benchmark writes benchmarks/perf/results/<name>.json; `report` renders
them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated

import torch
import typer

from pipeline.control.outputs import write_json
from pipeline.perf import augment_bench, hardness_bench, repro_bench, step_bench
from pipeline.perf.report import render
from pipeline.perf.timing import machine

app = typer.Typer(
    help="Performance benchmarks of this machine (benchmarks/perf/benchmarks.md): hardness, "
    "augmentation, step cost, profile, end to end.",
    no_args_is_help=True,
    add_completion=False,
)

PerfDir = Annotated[Path, typer.Option("--out-dir", help="where the JSON results go")]
Threads = Annotated[int, typer.Option(help="torch threads")]
_OUT = Path("benchmarks/perf/results")


def _write(folder: Path, name: str, result: dict) -> Path:
    path = folder / f"{name}.json"
    write_json(path, {"machine": machine(), **result})
    return path


@app.command("hardness")
def hardness_command(
    repeats: Annotated[int, typer.Option(help="timed calls per variant")] = 7,
    small: Annotated[bool, typer.Option(help="tiny shapes (CI smoke), not the paper's")] = False,
    out_dir: PerfDir = _OUT,
    threads: Threads = 2,
) -> None:
    """γ from maps: ours vs the authors-style per-image routine; end-to-end hardness()."""
    torch.set_num_threads(threads)
    shapes = ((4, 21, 33), (3, 19, 45)) if small else hardness_bench.PAPER_SHAPES
    rows = []
    for batch, classes, side in shapes:
        row = hardness_bench.bench_shape(batch, classes, side, repeats)
        typer.echo(
            f"B={batch} C={classes} {side}x{side}: ours {row['ours']['min_ms']} ms, "
            f"authors-style {row['authors_style']['min_ms']} ms ({row['speedup']}x), "
            f"max |diff| {row['max_abs_diff']:.2e}"
        )
        rows.append(row)
    _write(out_dir, "hardness", {"repeats": repeats, "shapes": rows})


@app.command("augment")
def augment_command(
    side: Annotated[int, typer.Option(help="crop side")] = 513,
    batch: Annotated[int, typer.Option(help="images per batch")] = 16,
    batches: Annotated[int, typer.Option(help="batches timed")] = 8,
    workers: Annotated[int, typer.Option(help="loader workers of the PIL way")] = 2,
    out_dir: PerfDir = _OUT,
    threads: Threads = 2,
) -> None:
    """Strong views per second: ours (torch, training process) vs PIL in loader workers."""
    torch.set_num_threads(threads)
    from pipeline.config.params import load_params

    k = load_params(Path("params.yaml")).aug.strong_ops
    result = augment_bench.bench_augment(side, batch, batches, k, workers)
    typer.echo(
        f"{side}x{side}, k={k}: ours {result['ours_images_per_s']} images/s, PIL in {workers} "
        f"workers {result['authors_images_per_s']} images/s"
    )
    _write(out_dir, "augment", result)


def _default_setup(params_file: Path, data: Path, split: Path, init: Path):
    """The default pipeline's model (warmup weights), training section and loaders."""
    from imas.model import build_model
    from pipeline.config.params import load_params
    from pipeline.training.checkpoints import load_checkpoint
    from pipeline.training.loaders import train_loaders

    params = load_params(params_file)
    for path in (data, split / "labeled.txt", init):
        if not path.exists():
            raise typer.BadParameter(f"{path} does not exist: run `dvc repro` first")
    weights = load_checkpoint(init)["best"]["student"]

    def make_model() -> torch.nn.Module:
        model = build_model(params.model)
        model.load_state_dict(copy.deepcopy(weights))
        return model

    cfg = params.train

    def batches():
        labeled, unlabeled, _ = train_loaders(
            params, data, split, cfg.batch_labeled, cfg.batch_unlabeled
        )
        return labeled, unlabeled

    return params, make_model, batches


DataDir = Annotated[Path, typer.Option(help="dataset root")]
SplitDir = Annotated[Path, typer.Option(help="split lists")]
InitCkpt = Annotated[Path, typer.Option(help="warmup checkpoint (the step's starting weights)")]


@app.command("steps")
def steps_command(
    steps: Annotated[int, typer.Option(help="timed steps per method")] = 30,
    data: DataDir = Path("data/embedded"),
    split: SplitDir = Path("data/split"),
    init: InitCkpt = Path("models/warmup.pt"),
    params_file: Annotated[Path, typer.Option("--params")] = Path("params.yaml"),
    out_dir: PerfDir = _OUT,
    threads: Threads = 2,
) -> None:
    """Step time by method at the default setting; hardness share; training throughput."""
    torch.set_num_threads(threads)
    params, make_model, batches = _default_setup(params_file, data, split, init)
    cfg = params.train
    result = step_bench.compare_methods(make_model, batches, cfg, params.aug.strong_ops, steps)
    images = cfg.batch_labeled + cfg.batch_unlabeled
    result["train_images_per_s"] = round(1000 * images / result["methods"]["imas"]["step_ms"], 1)
    result["eval_images_per_s"] = step_bench.eval_throughput(params, data, make_model())
    typer.echo("step ms: " + ", ".join(f"{k} {v['step_ms']}" for k, v in result["methods"].items()))
    typer.echo(
        f"iMAS / mean teacher: {result['imas_over_mean_teacher']}; hardness share of an iMAS "
        f"step: {100 * result['methods']['imas']['hardness_share']:.2f} %"
    )
    _write(out_dir, "steps", {"steps": steps, **result})


@app.command("profile")
def profile_command(
    steps: Annotated[int, typer.Option(help="profiled iMAS steps")] = 20,
    data: DataDir = Path("data/embedded"),
    split: SplitDir = Path("data/split"),
    init: InitCkpt = Path("models/warmup.pt"),
    params_file: Annotated[Path, typer.Option("--params")] = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="profile table")] = _OUT / "profile.txt",
    threads: Threads = 2,
) -> None:
    """torch.profiler table of the default iMAS training step (self CPU time)."""
    torch.set_num_threads(threads)
    params, make_model, batches = _default_setup(params_file, data, split, init)
    table = step_bench.profile_steps(
        make_model, batches, params.train, params.aug.strong_ops, steps
    )
    from pipeline.control.outputs import atomic_path

    with atomic_path(out) as tmp:
        tmp.write_text(table)
    typer.echo(table)


@app.command("repro")
def repro_command(
    workdir: Annotated[Path, typer.Option(help="fresh clone goes here (replaced)")] = Path(
        "/tmp/imas-perf-repro"
    ),
    out_dir: PerfDir = _OUT,
) -> None:
    """Wall time and peak memory of the default `dvc repro` in a fresh clone of HEAD."""
    result = repro_bench.bench_repro(Path.cwd(), workdir)
    typer.echo(f"dvc repro: {result['seconds']} s, peak {result['peak_rss_mib']} MiB")
    _write(out_dir, "repro", result)


@app.command("report")
def report_command(
    in_dir: Annotated[Path, typer.Option("--in-dir", help="benchmark JSONs")] = _OUT,
    out: Annotated[Path, typer.Option(help="markdown report")] = Path(
        "benchmarks/perf/benchmarks.md"
    ),
) -> None:
    """Render benchmarks/perf/benchmarks.md from the benchmark JSONs."""
    from pipeline.control.outputs import atomic_path

    text = render(in_dir)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    typer.echo(f"wrote {out}")
