"""Stage `report`: results.md, metrics.json, results.csv and the figures, from metrics/ only.

Every output is a pure function of the metrics files and a few params, with no timestamps or
paths, so `dvc repro` on unchanged inputs reproduces the report byte for byte. All inputs are
read and checked before anything is written: a missing file names itself and exits 2.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from pipeline.options import ParamsOpt, SetOpt, params_or_exit
from pipeline.outputs import HISTORY_FIELDS, atomic_path, write_json
from pipeline.params import Params
from pipeline.plots import ablation_bars, easiness_curves, hardness_histograms, training_curves
from pipeline.published import preset_published
from pipeline.tracking import stage_run

SUMMARY_KEYS = ["method", "miou", "best_epoch", "last_miou_student", "iterations"]
EVALUATED = [
    "warmup",
    "imas_teacher_best",
    "imas_teacher_last",
    "imas_student_best",
    "imas_student_last",
]
ABLATION_NAMES = {
    "mean_teacher": "Mean teacher",
    "no_loss_weight": "iMAS w/o loss weighting",
    "no_adaptive_intensity": "iMAS w/o adaptive intensity",
    "no_adaptive_cutmix_trigger": "iMAS w/o adaptive CutMix trigger (p=0.5)",
    "no_adaptive_cutmix_pairing": "iMAS w/o easiest-hardest CutMix pairs (random)",
    "no_adaptive_cutmix": "iMAS w/o adaptive CutMix (p=0.5, random pairs)",
}
FIGURES = {
    "training_curves": "Training curves (colour = run; solid = teacher, dashed = student)",
    "easiness": "Mean easiness and confident-pixel ratio per epoch",
    "hardness": "Per-image hardness of the unlabeled images at the first, middle and last epoch",
    "ablation_bars": "Best val mIoU per method",
    "qualitative": "Qualitative results on val (written by the evaluate stage)",
}


class ReportInputError(Exception):
    """A metrics file is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class Run:
    key: str  # key in reports/metrics.json
    name: str  # row name in the tables and figures
    summary: dict[str, Any]
    history: pd.DataFrame


@dataclass(frozen=True)
class ReportInputs:
    runs: list[Run]  # table order: SupOnly, ablations (mean teacher first), iMAS
    evaluation: dict[str, Any]
    hardness: pd.DataFrame  # epoch, hardness: one row per unlabeled image of the iMAS run


def ablation_name(name: str) -> str:
    return ABLATION_NAMES.get(name, f"iMAS ablation: {name}")


def header_facts(params: Params) -> dict[str, Any]:
    """The settings the report states; the report stage should list exactly these as params."""
    return {
        "preset": params.preset or "none (built-in default)",
        "dataset": params.dataset,
        "labeled images": params.labeled,
        "seed": params.seed,
        "model backbone": params.model.backbone,
        "warmup epochs": params.warmup.epochs,
        "train method": params.train.method,
        "train epochs": params.train.epochs,
    }


def _require(path: Path, stage: str) -> None:
    if not path.is_file():
        raise ReportInputError(f"{path}: no such file (run the `{stage}` stage first)")


def _read_json(path: Path, stage: str) -> dict[str, Any]:
    _require(path, stage)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ReportInputError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ReportInputError(f"{path}: expected a JSON object")
    return data


def _read_run(key: str, name: str, summary: Path, history: Path, stage: str) -> Run:
    data = _read_json(summary, stage)
    missing = [k for k in SUMMARY_KEYS if k not in data]
    if missing:
        raise ReportInputError(f"{summary}: missing key(s) {', '.join(missing)}")
    _require(history, stage)
    frame = pd.read_csv(history)
    missing = [c for c in HISTORY_FIELDS if c not in frame.columns]
    if missing:
        raise ReportInputError(f"{history}: missing column(s) {', '.join(missing)}")
    return Run(key, name, data, frame)


def _check_evaluation(path: Path, evaluation: dict[str, Any]) -> None:
    n_classes = len(evaluation.get("class_names", []))
    for key in EVALUATED:
        entry = evaluation.get(key)
        if not isinstance(entry, dict) or "miou" not in entry or "per_class_iou" not in entry:
            raise ReportInputError(f"{path}: missing {key}.miou or {key}.per_class_iou")
        if len(entry["per_class_iou"]) != n_classes:
            raise ReportInputError(
                f"{path}: {key}.per_class_iou has {len(entry['per_class_iou'])} values "
                f"for {n_classes} classes"
            )


def load_inputs(metrics_dir: Path, ablations: Sequence[str] | None = None) -> ReportInputs:
    """Read and check every input. `ablations=None` takes every JSON in `metrics_dir/ablate`."""
    ablate = metrics_dir / "ablate"
    if ablations is None:
        ablations = [p.stem for p in sorted(ablate.glob("*.json"))] if ablate.is_dir() else []
    # The mean-teacher baseline heads the ablation rows, as in the paper's tables.
    ordered = sorted(ablations, key=lambda name: name != "mean_teacher")
    runs = [
        _read_run(
            "supervised",
            "SupOnly",
            metrics_dir / "warmup.json",
            metrics_dir / "warmup_history.csv",
            "warmup",
        ),
        *(
            _read_run(
                "mean_teacher" if name == "mean_teacher" else f"ablation.{name}",
                ablation_name(name),
                ablate / f"{name}.json",
                ablate / f"{name}_history.csv",
                f"ablate@{name}",
            )
            for name in ordered
        ),
        _read_run(
            "imas", "iMAS", metrics_dir / "train.json", metrics_dir / "train_history.csv", "train"
        ),
    ]
    evaluation = _read_json(metrics_dir / "evaluate.json", "evaluate")
    _check_evaluation(metrics_dir / "evaluate.json", evaluation)
    return ReportInputs(runs, evaluation, _read_hardness(metrics_dir / "train_hardness.csv"))


def _read_hardness(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ReportInputError(f"{path}: no such file (the `train` stage writes it: --hardness)")
    frame = pd.read_csv(path)
    if list(frame.columns) != ["epoch", "hardness"]:
        raise ReportInputError(f"{path}: expected columns epoch,hardness")
    values = pd.to_numeric(frame["hardness"], errors="coerce")
    bad = frame[values.isna() | (values < 0) | (values > 1)]
    if len(bad):
        row = bad.index[0] + 2  # 1-based, after the header line
        raise ReportInputError(
            f"{path}: line {row}: hardness {bad.iloc[0]['hardness']!r} not in [0, 1]"
        )
    return frame


def _fmt(value: Any, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    value = round(float(value), 2) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{value:+.2f}" if sign else f"{value:.2f}"


def _first_last(frame: pd.DataFrame, column: str) -> tuple[tuple[int, float], ...]:
    """(epoch, value) of the first and last epochs that recorded `column`; () if none did."""
    values = pd.to_numeric(frame[column], errors="coerce")
    keep = values.notna()
    if not keep.any():
        return ()
    epochs, recorded = frame.loc[keep, "epoch"].to_numpy(), values[keep].to_numpy()
    return (int(epochs[0]), float(recorded[0])), (int(epochs[-1]), float(recorded[-1]))


def dynamics_sentence(history: pd.DataFrame) -> str:
    """Whether mean easiness and the confident ratio rose over the iMAS run, with the numbers."""
    parts = []
    for column, label in (
        ("easiness", "mean easiness ē"),
        ("confident_ratio", "the confident-pixel ratio"),
    ):
        ends = _first_last(history, column)
        if not ends:
            parts.append(f"{label} was not recorded")
            continue
        (e0, v0), (e1, v1) = ends
        a, b = f"{v0:.3f}", f"{v1:.3f}"
        verb = "rose" if float(b) > float(a) else "fell" if float(b) < float(a) else "stayed"
        span = f"from {a} (epoch {e0}) to {b} (epoch {e1})" if verb != "stayed" else f"at {a}"
        parts.append(f"{label} {verb} {span}")
    return f"In the iMAS run, {parts[0]}, and {parts[1]}."


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: bool = True) -> str:
    """A markdown table; `numeric` right-aligns every column but the first."""
    rule = " ---: |" if numeric else " --- |"
    lines = ["| " + " | ".join(header) + " |", "| --- |" + rule * (len(header) - 1)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def published_block(
    inputs: ReportInputs, preset: str, labeled: int, published: Mapping[str, Mapping[int, Any]]
) -> list[str]:
    """Markdown blocks: the preset's published SupOnly and iMAS numbers beside ours."""
    runs = {run.key: run.summary["miou"] for run in inputs.runs}
    rows = []
    for key, name in (("supervised", "SupOnly"), ("imas", "iMAS")):
        paper = published.get(key, {}).get(labeled)
        ours = runs.get(key)
        delta = None if paper is None or ours is None else ours - paper
        rows.append([name, _fmt(paper), _fmt(ours), _fmt(delta, sign=True)])
    return [
        f"## Published numbers (preset {preset}, {labeled} labels)",
        "— marks a number the paper does not give. Δ = ours − published.",
        _table(["method", "published", "ours", "Δ"], rows),
    ]


def render_markdown(
    inputs: ReportInputs, facts: Mapping[str, Any], published: Sequence[str] = ()
) -> str:
    runs = {run.key: run for run in inputs.runs}
    sup, imas = runs["supervised"].summary, runs["imas"].summary
    settings = [
        *facts.items(),
        ("warmup iterations", sup["iterations"]),
        ("train iterations", imas["iterations"]),
    ]
    results = [
        [
            run.name,
            _fmt(run.summary["miou"]),
            "—" if run.key == "supervised" else _fmt(run.summary["miou"] - sup["miou"], sign=True),
            _fmt(run.summary.get("last_miou_teacher")),
            _fmt(run.summary["last_miou_student"]),
        ]
        for run in inputs.runs
    ]
    ev = inputs.evaluation
    base, best = ev["warmup"]["per_class_iou"], ev["imas_teacher_best"]["per_class_iou"]
    per_class = [
        [name, _fmt(b), _fmt(i), "—" if b is None or i is None else _fmt(i - b, sign=True)]
        for name, b, i in zip(ev["class_names"], base, best, strict=True)
    ]
    per_class.append(
        [
            "**mIoU**",
            _fmt(ev["warmup"]["miou"]),
            _fmt(ev["imas_teacher_best"]["miou"]),
            _fmt(ev["imas_teacher_best"]["miou"] - ev["warmup"]["miou"], sign=True),
        ]
    )
    rescored = ", ".join(
        f"{label} {_fmt(ev[key]['miou'])}"
        for label, key in [
            ("iMAS teacher best", "imas_teacher_best"),
            ("teacher last", "imas_teacher_last"),
            ("student best", "imas_student_best"),
            ("student last", "imas_student_last"),
            ("SupOnly", "warmup"),
        ]
    )
    results_header = [
        "method",
        "val mIoU (best teacher)",
        "Δ vs SupOnly",
        "last teacher",
        "last student",
    ]
    # Blocks are separated by one blank line; a table is one block.
    blocks = [
        "# iMAS: semi-supervised semantic segmentation results",
        "Reproduce: `dvc repro`",
        "## Settings",
        _table(["setting", "value"], [[k, str(v)] for k, v in settings], numeric=False),
        "## Results",
        "Best val mIoU (%) over the epochs, scored on the teacher (the student for SupOnly, "
        "which has no teacher); Δ is against SupOnly.",
        _table(results_header, results),
        f"Re-scored by the evaluate stage: {rescored}.",
        *published,
        "## Per-class IoU (%), SupOnly vs iMAS (best teacher)",
        "— marks a class absent from val.",
        _table(["class", "SupOnly", "iMAS", "Δ"], per_class),
        "## Training dynamics",
        dynamics_sentence(runs["imas"].history),
        "## Figures",
        *(f"![{caption}](figures/{stem}.png)" for stem, caption in FIGURES.items()),
    ]
    return "\n\n".join(blocks) + "\n"


def flat_metrics(inputs: ReportInputs) -> dict[str, float]:
    """The `dvc metrics show` view: best val mIoU per method, 2 decimals."""
    out = {run.key: round(float(run.summary["miou"]), 2) for run in inputs.runs}
    runs = {run.key: run.summary["miou"] for run in inputs.runs}
    out["gain_over_supervised"] = round(float(runs["imas"] - runs["supervised"]), 2) + 0.0
    return out


def _results_csv(inputs: ReportInputs) -> str:
    sup = inputs.runs[0].summary["miou"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "miou", "delta"])
    for run in inputs.runs:
        m = run.summary["miou"]
        writer.writerow([run.name, f"{m:.2f}", f"{round(m - sup, 2) + 0.0:.2f}"])
    return buffer.getvalue()


def write_report(
    inputs: ReportInputs,
    out_dir: Path,
    facts: Mapping[str, Any],
    published: Sequence[str] = (),
) -> dict[str, float]:
    """Write every report output atomically; returns the contents of metrics.json.

    `published`: markdown blocks from `published_block` when a preset is active.
    """
    figures = out_dir / "figures"
    histories = {run.name: run.history for run in inputs.runs}
    training_curves(figures / "training_curves.png", histories)
    easiness_curves(figures / "easiness.png", histories)
    bars = pd.DataFrame(
        {
            "name": [r.name for r in inputs.runs],
            "miou": [float(r.summary["miou"]) for r in inputs.runs],
        }
    )
    ablation_bars(figures / "ablation_bars.png", bars)
    hardness_histograms(figures / "hardness.png", inputs.hardness)
    with atomic_path(out_dir / "results.csv") as tmp:
        tmp.write_text(_results_csv(inputs))
    metrics = flat_metrics(inputs)
    write_json(out_dir / "metrics.json", metrics)
    # Last, so a results.md on disk always sits next to the figures it links.
    with atomic_path(out_dir / "results.md") as tmp:
        tmp.write_text(render_markdown(inputs, facts, published))
    return metrics


def build_report(
    metrics_dir: Path,
    out_dir: Path,
    facts: Mapping[str, Any],
    ablations: Sequence[str] | None = None,
) -> dict[str, float]:
    """Read `metrics_dir`, write the report to `out_dir`; no MLflow. Raises ReportInputError."""
    return write_report(load_inputs(metrics_dir, ablations), out_dir, facts)


def command(
    metrics: Annotated[Path, typer.Option(help="folder the training stages wrote")] = Path(
        "metrics"
    ),
    out: Annotated[Path, typer.Option(help="report folder")] = Path("reports"),
    params_file: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Write results.md, metrics.json, results.csv and the figures from the metrics files."""
    params = params_or_exit(params_file, overrides)
    try:
        # Ablations come from params, so a missing one is an error and a stale file is ignored.
        inputs = load_inputs(metrics, list(params.ablations))
    except ReportInputError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    blocks: list[str] = []
    if params.preset is not None:
        miou = preset_published(params.preset).miou
        blocks = published_block(inputs, params.preset, params.labeled, miou)
    with stage_run("report", params, "report") as run:
        values = write_report(inputs, out, header_facts(params), blocks)
        run.log_metrics(values)
        for name in ("results.md", "results.csv", "metrics.json"):
            run.log_artifact(out / name)
        for stem in ("training_curves", "easiness", "ablation_bars", "hardness"):
            run.log_artifact(out / "figures" / f"{stem}.png", "figures")
    typer.echo(
        f"report: iMAS {values['imas']:.2f} vs SupOnly {values['supervised']:.2f} "
        f"({values['gain_over_supervised']:+.2f}); wrote {out / 'results.md'}"
    )
