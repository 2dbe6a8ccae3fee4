"""The report's inputs: every metrics file the report stage reads, read and checked up front.

Which run is SupOnly depends on the params: with a `supervised` ablation (the default), SupOnly
is that run, the warmup continued without the unlabeled loss for as many iterations as iMAS,
and the warmup itself is only the first part of the schedule every run shares. Params without
one (older ones) have no such run, so the warmup stands in for SupOnly, as it used to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.control.outputs import HISTORY_FIELDS
from pipeline.reporting.inputs import ReportInputError, read_json, require

SUMMARY_KEYS = ["method", "miou", "best_epoch", "last_miou_student", "iterations"]
# Diagnostics added to the history after runs had been written without them: a history that
# lacks them is read with the column empty (shown as "not recorded") rather than refused.
LATER_COLUMNS = ("pure_background", "premise_spearman")
EVALUATED = [
    "supervised",
    "imas_teacher_best",
    "imas_teacher_last",
    "imas_student_best",
    "imas_student_last",
]
SUPERVISED = "supervised"  # the ablation that is SupOnly
ABLATION_NAMES = {
    SUPERVISED: "SupOnly",
    "mean_teacher": "Mean teacher",
    "no_loss_weight": "iMAS w/o loss weighting",
    "no_adaptive_intensity": "iMAS w/o adaptive intensity",
    "no_adaptive_cutmix_trigger": "iMAS w/o adaptive CutMix trigger (p=0.5)",
    "no_adaptive_cutmix_pairing": "iMAS w/o easiest-hardest CutMix pairs (random)",
    "no_adaptive_cutmix": "iMAS w/o adaptive CutMix (p=0.5, random pairs)",
}
WARMUP_NAME = "Warmup (first part of the schedule)"


@dataclass(frozen=True)
class Run:
    key: str  # key in reports/metrics.json
    name: str  # row name in the tables and figures
    summary: dict[str, Any]
    history: pd.DataFrame


@dataclass(frozen=True)
class ReportInputs:
    runs: list[Run]  # table order: SupOnly, ablations (mean teacher first), iMAS
    # The warmup when it is not SupOnly (a `supervised` ablation exists); None when it is.
    warmup: Run | None
    evaluation: dict[str, Any]
    hardness: pd.DataFrame  # epoch, hardness: one row per unlabeled image of the iMAS run

    @property
    def warmup_run(self) -> Run:
        """The warmup's run, wherever it sits: apart, or as the SupOnly row."""
        return self.warmup if self.warmup is not None else self.runs[0]


def ablation_name(name: str) -> str:
    return ABLATION_NAMES.get(name, f"iMAS ablation: {name}")


def _run_key(name: str) -> str:
    # SupOnly and the mean-teacher baseline keep their plain keys (metrics.json, published block).
    return name if name in (SUPERVISED, "mean_teacher") else f"ablation.{name}"


def read_run(key: str, name: str, summary: Path, history: Path, stage: str) -> Run:
    data = read_json(summary, stage)
    missing = [k for k in SUMMARY_KEYS if k not in data]
    if missing:
        raise ReportInputError(f"{summary}: missing key(s) {', '.join(missing)}")
    require(history, stage)
    frame = pd.read_csv(history)
    missing = [c for c in HISTORY_FIELDS if c not in frame.columns and c not in LATER_COLUMNS]
    if missing:
        raise ReportInputError(f"{history}: missing column(s) {', '.join(missing)}")
    for column in LATER_COLUMNS:
        if column not in frame.columns:
            frame[column] = np.nan
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


def read_hardness(path: Path) -> pd.DataFrame:
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


def load_inputs(metrics_dir: Path, ablations: Sequence[str] | None = None) -> ReportInputs:
    """Read and check every input. `ablations=None` takes every JSON in `metrics_dir/ablate`."""
    ablate = metrics_dir / "ablate"
    if ablations is None:
        ablations = [p.stem for p in sorted(ablate.glob("*.json"))] if ablate.is_dir() else []
    warmup = read_run(
        SUPERVISED if SUPERVISED not in ablations else "warmup",
        "SupOnly" if SUPERVISED not in ablations else WARMUP_NAME,
        metrics_dir / "warmup.json",
        metrics_dir / "warmup_history.csv",
        "warmup",
    )
    # SupOnly heads the rows, then the mean-teacher baseline, as in the paper's tables; the
    # other ablations keep their params order.
    ordered = sorted(ablations, key=lambda name: (name != SUPERVISED, name != "mean_teacher"))
    ablation_runs = [
        read_run(
            _run_key(name),
            ablation_name(name),
            ablate / f"{name}.json",
            ablate / f"{name}_history.csv",
            f"ablate@{name}",
        )
        for name in ordered
    ]
    imas = read_run(
        "imas", "iMAS", metrics_dir / "train.json", metrics_dir / "train_history.csv", "train"
    )
    evaluation = read_json(metrics_dir / "evaluate.json", "evaluate")
    _check_evaluation(metrics_dir / "evaluate.json", evaluation)
    hardness = read_hardness(metrics_dir / "train_hardness.csv")
    if SUPERVISED in ablations:
        return ReportInputs([*ablation_runs, imas], warmup, evaluation, hardness)
    return ReportInputs([warmup, *ablation_runs, imas], None, evaluation, hardness)
