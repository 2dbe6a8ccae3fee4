"""The SSL benchmark table: per-seed lists, mean ± std, Δ rows, and missing runs named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.benchmark import BenchmarkError, collect, render_markdown
from pipeline.cli import app

RUNS = {
    (92, 0): {"supervised": 20.0, "mean_teacher": 22.5, "imas": 26.0},
    (92, 1): {"supervised": 22.0, "mean_teacher": 23.5, "imas": 28.0},
    (366, 0): {"supervised": 40.0, "mean_teacher": 41.0, "imas": 43.0},
    (366, 1): {"supervised": 42.0, "mean_teacher": 43.0, "imas": 45.0},
}


def write_runs(root: Path, runs=RUNS) -> Path:
    for (labeled, seed), by_method in runs.items():
        folder = root / f"{labeled}-s{seed}"
        folder.mkdir(parents=True)
        for method, miou in by_method.items():
            (folder / f"{method}.json").write_text(json.dumps({"method": method, "miou": miou}))
    return root


def test_collect_orders_label_counts_and_seeds(tmp_path: Path) -> None:
    table = collect(write_runs(tmp_path / "results"))
    assert list(table) == ["92", "366"]
    assert table["92"] == {"supervised": [20.0, 22.0], "mean_teacher": [22.5, 23.5],
                           "imas": [26.0, 28.0]}  # fmt: skip


def test_markdown_mean_std_and_deltas(tmp_path: Path) -> None:
    text = render_markdown(collect(write_runs(tmp_path / "results")))
    assert "| SupOnly | 21.00 ± 1.41 | 41.00 ± 1.41 |" in text
    assert "| iMAS | 27.00 ± 1.41 | 44.00 ± 1.41 |" in text
    assert "| Δ iMAS − SupOnly | +6.00 | +3.00 |" in text
    assert "| Δ Mean teacher − SupOnly | +2.00 | +1.00 |" in text


def test_missing_run_is_named(tmp_path: Path) -> None:
    root = write_runs(tmp_path / "results")
    (root / "366-s1" / "imas.json").unlink()
    with pytest.raises(BenchmarkError, match=r"366-s1/imas\.json: no such file"):
        collect(root)
    with pytest.raises(BenchmarkError, match="no <labeled>-s<seed> folders"):
        collect(tmp_path / "empty")


def test_command_writes_json_and_markdown(tmp_path: Path) -> None:
    root = write_runs(tmp_path / "results")
    out, md = tmp_path / "r" / "ssl.json", tmp_path / "r" / "ssl.md"
    args = ["benchmark", "--results", str(root), "--out", str(out), "--markdown", str(md)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["366"]["imas"] == [43.0, 45.0]
    assert md.read_text().startswith("# SSL benchmark")
    (root / "92-s0" / "supervised.json").write_text('{"method": "imas", "miou": 1}')
    bad = CliRunner().invoke(app, args)
    assert bad.exit_code == 2 and "supervised.json" in bad.output
