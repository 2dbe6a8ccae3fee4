"""The report stage on hand-made metrics files: exact tables, metrics, byte-identical outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import typer
from matplotlib.image import imread
from typer.testing import CliRunner, Result

from pipeline.control.outputs import HISTORY_FIELDS
from pipeline.reporting import plots, report
from pipeline.reporting.inputs import ReportInputError
from pipeline.reporting.report_inputs import ablation_name
from pipeline.stages import report as report_stage

REPO = Path(__file__).resolve().parents[2]
FACTS = {"dataset": "embedded", "labeled images": 6, "seed": 0, "model backbone": "tiny"}
PNGS = ["training_curves", "easiness", "ablation_bars", "hardness"]


def _summary(method: str, miou: float, student: float, teacher: float | None, iters: int) -> dict:
    out = {
        "method": method,
        "miou": miou,
        "best_epoch": 3,
        "last_miou_student": student,
        "iterations": iters,
    }
    if teacher is not None:
        out["last_miou_teacher"] = teacher
    return out


def _history(rows: list[dict], fields: list[str] = HISTORY_FIELDS) -> str:
    """CSV text of `rows` in the column order of `fields`; a missing value is an empty cell."""
    lines = [",".join(str(row.get(f, "")) for f in fields) for row in rows]
    return "\n".join([",".join(fields), *lines]) + "\n"


def _semi_rows(
    easiness: list[float], confident: list[float], base: float, background: float
) -> list[dict]:
    return [
        {
            "epoch": e,
            "loss": 1.0,
            "loss_x": 0.6,
            "loss_u": 0.4,
            "easiness": easiness[e - 1],
            "confident_ratio": confident[e - 1],
            "cutmix": 0.5 + 0.1 * e,
            "pure_background": round(background / e, 4),
            "lr": 0.01,
            "miou_student": base + e,
            "miou_teacher": base + e + 0.5,
        }
        for e in (1, 2, 3)
    ]


def _semi_history(
    easiness: list[float], confident: list[float], base: float, background: float
) -> str:
    return _history(_semi_rows(easiness, confident, base, background))


def _supervised_history(base: float) -> str:
    # Supervised runs leave the teacher and unlabeled columns empty.
    return _history(
        [
            {"epoch": e, "loss": 0.5, "loss_x": 0.5, "lr": 0.01, "miou_student": base + e}
            for e in (1, 2, 3)
        ]
    )


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    """The default pipeline's metrics: a warmup that SupOnly (the `supervised` ablation), mean
    teacher, one iMAS ablation and iMAS all continue."""
    root = tmp_path / "metrics"
    (root / "ablate").mkdir(parents=True)
    files = {
        "warmup.json": _summary("supervised", 55.0, 54.5, None, 30),
        "train.json": _summary("imas", 64.25, 62.5, 63.75, 60),
        "ablate/supervised.json": _summary("supervised", 60.0, 59.5, None, 60),
        "ablate/mean_teacher.json": _summary("mean_teacher", 61.8, 60.4, 61.2, 60),
        "ablate/no_loss_weight.json": _summary("imas", 63.1, 61.05, 62.9, 60),
        "evaluate.json": {
            "class_names": ["background", "zero", "one"],
            "supervised": {"miou": 70.25, "per_class_iou": [90.0, 50.5, None]},
            "imas_teacher_best": {"miou": 73.75, "per_class_iou": [92.5, 55.0, None]},
            "imas_teacher_last": {"miou": 73.0, "per_class_iou": [92.0, 54.0, None]},
            "imas_student_best": {"miou": 72.0, "per_class_iou": [91.0, 53.0, None]},
            "imas_student_last": {"miou": 71.5, "per_class_iou": [91.0, 52.0, None]},
        },
    }
    for name, data in files.items():
        (root / name).write_text(json.dumps(data))
    (root / "warmup_history.csv").write_text(_supervised_history(51))
    (root / "ablate/supervised_history.csv").write_text(_supervised_history(56))
    (root / "train_history.csv").write_text(
        _semi_history([0.612, 0.75, 0.905], [0.55, 0.7, 0.88], 58, 0.02)
    )
    (root / "ablate/mean_teacher_history.csv").write_text(
        _semi_history([0.6, 0.7, 0.8], [0.5, 0.6, 0.7], 57, 0.125)
    )
    (root / "ablate/no_loss_weight_history.csv").write_text(
        _semi_history([0.62, 0.74, 0.9], [0.52, 0.69, 0.86], 58, 0.0)
    )
    rows = [f"{e},{h}" for e in (0, 1, 2) for h in (0.1, 0.45 - 0.1 * e, 0.9 - 0.2 * e)]
    (root / "train_hardness.csv").write_text("\n".join(["epoch,hardness", *rows]) + "\n")
    return root


def test_results_table_rows_and_deltas(metrics_dir: Path, tmp_path: Path) -> None:
    report.build_report(metrics_dir, tmp_path / "reports", FACTS)
    md = (tmp_path / "reports/results.md").read_text()
    expected = [
        "| method | val mIoU (best teacher) | Δ vs SupOnly | last teacher | last student |",
        "| --- | ---: | ---: | ---: | ---: |",
        "| SupOnly | 60.00 | — | — | 59.50 |",
        "| Mean teacher | 61.80 | +1.80 | 61.20 | 60.40 |",
        "| iMAS w/o loss weighting | 63.10 | +3.10 | 62.90 | 61.05 |",
        "| iMAS | 64.25 | +4.25 | 63.75 | 62.50 |",
    ]
    start = md.index(expected[0])
    assert md[start:].splitlines()[: len(expected)] == expected
    per_class = [
        "| background | 90.00 | 92.50 | +2.50 |",
        "| zero | 50.50 | 55.00 | +4.50 |",
        "| one | — | — | — |",
        "| **mIoU** | 70.25 | 73.75 | +3.50 |",
    ]
    for row in per_class:
        assert row in md.splitlines()
    assert "| labeled images | 6 |" in md
    # The warmup is the start every row continues, a setting rather than a method.
    assert "| warmup iterations | 30 |" in md
    assert "| train iterations | 60 |" in md
    assert (
        "| warmup (first part of the schedule) | best val mIoU 55.00 (epoch 3), last student "
        "54.50 |"
    ) in md
    assert "SupOnly is the warmup continued without the unlabeled loss" in md
    assert "Warmup" not in md.split("## Results")[1]
    assert (
        "mean over each run's first epoch (the teacher's copy phase): Mean teacher 0.125 "
        "(epoch 1), iMAS w/o loss weighting 0.000 (epoch 1), iMAS 0.020 (epoch 1)."
    ) in md
    assert "Reproduce: `dvc repro`" in md
    assert (
        "In the iMAS run, mean easiness ē rose from 0.612 (epoch 1) to 0.905 (epoch 3), and the "
        "confident-pixel ratio rose from 0.550 (epoch 1) to 0.880 (epoch 3)."
    ) in md
    for stem in [*PNGS, "qualitative"]:
        assert f"(figures/{stem}.png)" in md


def test_metrics_json_and_csv(metrics_dir: Path, tmp_path: Path) -> None:
    values = report.build_report(metrics_dir, tmp_path / "reports", FACTS)
    expected = {
        "warmup": 55.0,
        "supervised": 60.0,
        "mean_teacher": 61.8,
        "ablation.no_loss_weight": 63.1,
        "imas": 64.25,
        "gain_over_supervised": 4.25,
    }
    assert values == expected
    assert json.loads((tmp_path / "reports/metrics.json").read_text()) == expected
    assert (tmp_path / "reports/results.csv").read_text() == (
        "name,miou,delta\nSupOnly,60.00,0.00\nMean teacher,61.80,1.80\n"
        "iMAS w/o loss weighting,63.10,3.10\niMAS,64.25,4.25\n"
    )


def test_figures_are_valid_pngs(metrics_dir: Path, tmp_path: Path) -> None:
    report.build_report(metrics_dir, tmp_path / "reports", FACTS)
    for stem in PNGS:
        path = tmp_path / "reports/figures" / f"{stem}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"Software" not in path.read_bytes()  # no matplotlib version in the metadata
        height, width, _ = imread(path).shape
        assert height > 100 and width > 100


def test_same_inputs_give_byte_identical_outputs(metrics_dir: Path, tmp_path: Path) -> None:
    for out in ("a", "b"):
        report.build_report(metrics_dir, tmp_path / out, FACTS)
    files = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    assert len(files) == 7
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


@pytest.mark.parametrize(
    "name",
    [
        "warmup.json",
        "ablate/supervised_history.csv",
        "train_history.csv",
        "train_hardness.csv",
        "evaluate.json",
        "ablate/no_loss_weight_history.csv",
    ],
)
def test_missing_file_is_named_and_nothing_written(
    metrics_dir: Path, tmp_path: Path, name: str
) -> None:
    (metrics_dir / name).unlink()
    with pytest.raises(ReportInputError, match=re.escape(f"{metrics_dir / name}: no such file")):
        report.build_report(metrics_dir, tmp_path / "reports", FACTS)
    assert not (tmp_path / "reports").exists()


def test_listed_ablations_are_required_and_others_ignored(
    metrics_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ReportInputError, match=r"ablate/no_adaptive_cutmix\.json: no such file"):
        report.load_inputs(metrics_dir, ["mean_teacher", "no_adaptive_cutmix"])
    inputs = report.load_inputs(metrics_dir, ["no_loss_weight", "supervised"])
    assert [r.name for r in inputs.runs] == ["SupOnly", "iMAS w/o loss weighting", "iMAS"]
    assert inputs.runs[0].summary["iterations"] == 60  # the continued run, not the warmup
    assert inputs.warmup is not None and inputs.warmup.summary["iterations"] == 30
    # Without a `supervised` ablation (older params), the warmup is SupOnly, as it used to be.
    inputs = report.load_inputs(metrics_dir, ["no_loss_weight"])
    assert [r.name for r in inputs.runs] == ["SupOnly", "iMAS w/o loss weighting", "iMAS"]
    assert inputs.runs[0].summary["iterations"] == 30 and inputs.warmup is None


def test_without_a_supervised_ablation_the_warmup_is_suponly(
    metrics_dir: Path, tmp_path: Path
) -> None:
    for suffix in (".json", "_history.csv"):
        (metrics_dir / f"ablate/supervised{suffix}").unlink()
    values = report.build_report(metrics_dir, tmp_path / "reports", FACTS)
    assert values["supervised"] == 55.0 and values["gain_over_supervised"] == 9.25
    assert "warmup" not in values
    md = (tmp_path / "reports/results.md").read_text()
    assert "| SupOnly | 55.00 | — | — | 54.50 |" in md
    assert "| iMAS | 64.25 | +9.25 | 63.75 | 62.50 |" in md
    assert "SupOnly is the warmup alone (params have no `supervised` ablation)." in md
    assert "warmup (first part of the schedule)" not in md
    assert (tmp_path / "reports/results.csv").read_text().splitlines()[1] == "SupOnly,55.00,0.00"


def test_histories_from_before_the_later_diagnostics_still_report(
    metrics_dir: Path, tmp_path: Path
) -> None:
    """Histories written before `pure_background` and `premise_spearman` existed."""
    older = [f for f in HISTORY_FIELDS if f not in ("pure_background", "premise_spearman")]
    for name, easiness in (("train", 0.7), ("ablate/mean_teacher", 0.6)):
        rows = _semi_rows([easiness] * 3, [0.5] * 3, 57, 0.1)
        (metrics_dir / f"{name}_history.csv").write_text(_history(rows, older))
    for suffix in (".json", "_history.csv"):
        (metrics_dir / f"ablate/no_loss_weight{suffix}").unlink()
    report.build_report(metrics_dir, tmp_path / "reports", FACTS)
    md = (tmp_path / "reports/results.md").read_text()
    assert "(the teacher's copy phase): not recorded." in md
    # Other columns stay required.
    (metrics_dir / "train_history.csv").write_text(_history([{"epoch": 1}], ["epoch", "loss"]))
    with pytest.raises(ReportInputError, match=r"train_history\.csv: missing column"):
        report.build_report(metrics_dir, tmp_path / "again", FACTS)


def test_ablation_names() -> None:
    # Named where the report's inputs are read (pipeline/reporting/report_inputs.py).
    assert ablation_name("supervised") == "SupOnly"
    assert ablation_name("no_adaptive_cutmix") == "iMAS w/o adaptive CutMix (p=0.5, random pairs)"
    assert ablation_name("tau_095") == "iMAS ablation: tau_095"


def test_malformed_summary_names_file_and_key(metrics_dir: Path, tmp_path: Path) -> None:
    (metrics_dir / "train.json").write_text(json.dumps({"method": "imas", "miou": 1.0}))
    with pytest.raises(ReportInputError, match=r"train\.json: missing key\(s\) best_epoch"):
        report.build_report(metrics_dir, tmp_path / "reports", FACTS)


def test_qualitative_grid_is_deterministic(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 3, 16, 16), dtype=np.uint8)
    truth = np.zeros((2, 16, 16), dtype=np.int64)
    truth[:, 4:10, 4:10] = 2
    truth[:, 3, 4:10] = 255
    preds = {"supervised": np.clip(truth, 0, 2), "iMAS": truth % 255}
    for out in ("a.png", "b.png"):
        plots.qualitative_grid(tmp_path / out, images, truth, preds, ["bg", "zero", "one"])
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert imread(tmp_path / "a.png").shape[2] == 4
    with pytest.raises(ValueError, match="iMAS"):
        plots.qualitative_grid(tmp_path / "c.png", images, truth, {"iMAS": truth[:1]}, ["bg"])


def _app() -> typer.Typer:
    # The stage command alone, so the test does not depend on every other stage importing.
    app = typer.Typer()
    app.command()(report_stage.command)
    return app


# The default pipeline's runs, pinned: the test does not follow edits of params.yaml's ablations.
ABLATIONS = "ablations={supervised: {method: supervised}, mean_teacher: {method: mean_teacher}}"


def _invoke(metrics_dir: Path, out: Path) -> Result:
    """Run the command with the repo's params.yaml and the default pipeline's ablations."""
    args = ["--metrics", str(metrics_dir), "--out", str(out), "--params", str(REPO / "params.yaml")]
    return CliRunner().invoke(_app(), [*args, "--set", ABLATIONS])


needs_params = pytest.mark.skipif(
    not (REPO / "params.yaml").is_file(), reason="params.yaml not written yet"
)


@needs_params
def test_command_missing_file_exits_2(metrics_dir: Path, tmp_path: Path) -> None:
    (metrics_dir / "evaluate.json").unlink()
    result = _invoke(metrics_dir, tmp_path / "reports")
    assert result.exit_code == 2
    assert f"error: {metrics_dir / 'evaluate.json'}: no such file" in result.output
    assert not (tmp_path / "reports").exists()


@needs_params
def test_command_writes_report_and_logs_to_mlflow(
    metrics_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is relative to the cwd
    result = _invoke(metrics_dir, tmp_path / "reports")
    assert result.exit_code == 0, result.output
    md = (tmp_path / "reports/results.md").read_text()
    assert "| model backbone |" in md
    assert json.loads((tmp_path / "reports/metrics.json").read_text())["imas"] == 64.25

    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) == 1
    assert runs[0].data.metrics["gain_over_supervised"] == 4.25
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(runs[0].info.run_id)}
    assert {"results.md", "results.csv", "metrics.json", "figures"} <= logged


def test_histogram_epochs_spread_first_to_last() -> None:
    assert plots.histogram_epochs([0, 0, 1, 1]) == [0, 1]
    assert plots.histogram_epochs([4, 0, 2, 1, 3]) == [0, 2, 4]
    assert plots.histogram_epochs(range(10)) == [0, 4, 9]  # linspace 0, 4.5, 9 rounds half-even


def test_hardness_out_of_range_names_file_and_line(metrics_dir: Path, tmp_path: Path) -> None:
    path = metrics_dir / "train_hardness.csv"
    path.write_text("epoch,hardness\n0,0.5\n0,1.25\n")
    with pytest.raises(ReportInputError, match=r"train_hardness\.csv: line 3: hardness"):
        report.build_report(metrics_dir, tmp_path / "reports", FACTS)
    assert not (tmp_path / "reports").exists()


def test_hardness_histogram_shows_the_data(metrics_dir: Path, tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.read_csv(metrics_dir / "train_hardness.csv")
    plots.hardness_histograms(tmp_path / "a.png", frame)
    shifted = frame.assign(hardness=1.0 - frame["hardness"])
    plots.hardness_histograms(tmp_path / "b.png", shifted)
    plots.hardness_histograms(tmp_path / "empty.png", frame.iloc[:0])
    pictures = [imread(tmp_path / name) for name in ("a.png", "b.png", "empty.png")]
    assert pictures[0].shape == pictures[1].shape == pictures[2].shape
    assert not np.array_equal(pictures[0], pictures[1])
    assert not np.array_equal(pictures[0], pictures[2])


def test_published_block_puts_paper_beside_ours(metrics_dir: Path, tmp_path: Path) -> None:
    inputs = report.load_inputs(metrics_dir)
    paper = {"imas": {6: 70.0}, "supervised": {6: None}}
    blocks = report.published_block(inputs, "voc_classic_r101", 6, paper)
    assert blocks[0] == "## Published numbers (preset voc_classic_r101, 6 labels)"
    assert blocks[2].splitlines()[2:] == [
        "| SupOnly | — | 60.00 | — |",
        "| iMAS | 70.00 | 64.25 | -5.75 |",
    ]
    report.write_report(inputs, tmp_path / "reports", FACTS, blocks)
    assert "| iMAS | 70.00 | 64.25 | -5.75 |" in (tmp_path / "reports/results.md").read_text()
