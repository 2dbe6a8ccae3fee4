"""Stage `report`: results.md, metrics.json, results.csv and the figures, from metrics/ only.

Every output is a pure function of the metrics files and a few params, with no timestamps or
paths, so `dvc repro` on unchanged inputs reproduces the report byte for byte. All inputs are
read and checked before anything is written (`pipeline.reporting.report_inputs`): a missing
file names itself and exits 2.

SupOnly is the `supervised` ablation when params have one: the warmup continued without the
unlabeled loss, so every row has trained as long as iMAS. The warmup then gets a line of its own
in the settings and stays out of the figures, whose epochs are those of the continued runs.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.config.params import Params
from pipeline.control.outputs import atomic_path, write_json
from pipeline.reporting.plots import (
    ablation_bars,
    easiness_curves,
    hardness_histograms,
    training_curves,
)
from pipeline.reporting.report_inputs import (
    ReportInputs,
    Run,
    load_inputs,
)

FIGURES = {
    "training_curves": "Training curves (colour = run; solid = teacher, dashed = student)",
    "easiness": "Mean easiness and confident-pixel ratio per epoch",
    "hardness": "Per-image hardness of the unlabeled images at the first, middle and last epoch",
    "ablation_bars": "Best val mIoU per method",
    "qualitative": "Qualitative results on val (written by the evaluate stage)",
}


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


def copy_phase_sentence(runs: Sequence[Run]) -> str:
    """The share of all-background pseudo-labels in each teacher–student run's first epoch,
    where the teacher starts as a copy of the student: a collapse symptom when high."""
    parts = []
    for run in runs:
        first = _first_last(run.history, "pure_background")
        if first:  # a supervised run has no pseudo-labels; an older history no such column
            (epoch, value), _ = first
            parts.append(f"{run.name} {value:.3f} (epoch {epoch})")
    shown = ", ".join(parts) if parts else "not recorded"
    return (
        "Unlabeled images whose pseudo-label is all background, as a share of the batch, mean "
        f"over each run's first epoch (the teacher's copy phase): {shown}."
    )


def _settings(inputs: ReportInputs, facts: Mapping[str, Any]) -> list[tuple[str, Any]]:
    warm, imas = inputs.warmup_run.summary, inputs.runs[-1].summary
    rows = [
        *facts.items(),
        ("warmup iterations", warm["iterations"]),
        ("train iterations", imas["iterations"]),
    ]
    if inputs.warmup is not None:
        # Not a method but the start every row continues: its score says what the
        # continued runs added.
        rows.append(
            (
                "warmup (first part of the schedule)",
                f"best val mIoU {_fmt(warm['miou'])} (epoch {warm['best_epoch']}), "
                f"last student {_fmt(warm['last_miou_student'])}",
            )
        )
    return rows


def render_markdown(
    inputs: ReportInputs, facts: Mapping[str, Any], published: Sequence[str] = ()
) -> str:
    runs = {run.key: run for run in inputs.runs}
    sup = runs["supervised"].summary
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
    base, best = ev["supervised"]["per_class_iou"], ev["imas_teacher_best"]["per_class_iou"]
    per_class = [
        [name, _fmt(b), _fmt(i), "—" if b is None or i is None else _fmt(i - b, sign=True)]
        for name, b, i in zip(ev["class_names"], base, best, strict=True)
    ]
    per_class.append(
        [
            "**mIoU**",
            _fmt(ev["supervised"]["miou"]),
            _fmt(ev["imas_teacher_best"]["miou"]),
            _fmt(ev["imas_teacher_best"]["miou"] - ev["supervised"]["miou"], sign=True),
        ]
    )
    rescored = ", ".join(
        f"{label} {_fmt(ev[key]['miou'])}"
        for label, key in [
            ("iMAS teacher best", "imas_teacher_best"),
            ("teacher last", "imas_teacher_last"),
            ("student best", "imas_student_best"),
            ("student last", "imas_student_last"),
            ("SupOnly", "supervised"),
        ]
    )
    results_header = [
        "method",
        "val mIoU (best teacher)",
        "Δ vs SupOnly",
        "last teacher",
        "last student",
    ]
    if inputs.warmup is not None:
        supervised = (
            "SupOnly is the warmup continued without the unlabeled loss; every run continues "
            "the same warmup for the same iterations."
        )
    else:  # params without a `supervised` ablation
        supervised = "SupOnly is the warmup alone (params have no `supervised` ablation)."
    # Blocks are separated by one blank line; a table is one block.
    blocks = [
        "# iMAS: semi-supervised semantic segmentation results",
        "Reproduce: `dvc repro`",
        "## Settings",
        _table(
            ["setting", "value"],
            [[k, str(v)] for k, v in _settings(inputs, facts)],
            numeric=False,
        ),
        "## Results",
        "Best val mIoU (%) over the epochs, scored on the teacher (the student for SupOnly, "
        f"which has no teacher); Δ is against SupOnly. {supervised}",
        _table(results_header, results),
        f"Re-scored by the evaluate stage: {rescored}.",
        *published,
        "## Per-class IoU (%), SupOnly vs iMAS (best teacher)",
        "— marks a class absent from val.",
        _table(["class", "SupOnly", "iMAS", "Δ"], per_class),
        "## Training dynamics",
        dynamics_sentence(runs["imas"].history),
        copy_phase_sentence(inputs.runs),
        "## Figures",
        *(f"![{caption}](figures/{stem}.png)" for stem, caption in FIGURES.items()),
    ]
    return "\n\n".join(blocks) + "\n"


def flat_metrics(inputs: ReportInputs) -> dict[str, float]:
    """The `dvc metrics show` view: best val mIoU per method, 2 decimals."""
    out = {run.key: round(float(run.summary["miou"]), 2) for run in inputs.runs}
    if inputs.warmup is not None:  # the start of every run, beside them
        out["warmup"] = round(float(inputs.warmup.summary["miou"]), 2)
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
    # The methods only: a separate warmup's epochs come before theirs, on another axis.
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
