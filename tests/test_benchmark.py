"""The SSL benchmark table: per-seed lists, mean ± std, Δ rows, and missing runs named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dvc_grid import grid_stages, listed_stages
from typer.testing import CliRunner

from pipeline.benchmark import (
    BenchmarkError,
    collect,
    dynamics,
    iterations,
    load_histories,
    render_markdown,
)
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
        warm = {"method": "supervised", "miou": 1.0, "iterations": 100}
        (folder / "warmup.json").write_text(json.dumps(warm))
        for method, miou in by_method.items():
            summary = {"method": method, "miou": miou, "iterations": labeled * 10}
            (folder / f"{method}.json").write_text(json.dumps(summary))
            # iMAS's ē rises 0.5 → 0.7 (seed 0) and 0.6 → 0.8 (seed 1); the ratio falls for 366.
            e0 = 0.5 + 0.1 * seed
            ratio = (0.9, 0.8) if labeled == 366 else (0.7, 0.9)
            rows = ["epoch,loss_x,easiness,confident_ratio,miou_teacher"]
            rows += [
                f"0,1.0,{ratio[0]},{ratio[0]},{miou - 3}",  # copy epoch: ē = ratio
                f"1,1.0,{e0},{ratio[0]},{miou - 2}",
                f"2,0.5,{e0 + 0.2},{ratio[1]},{miou}",
            ]
            if method == "supervised":
                rows = ["epoch,loss_x,miou_student", f"0,1.0,{miou - 1}", f"1,0.5,{miou}"]
            (folder / f"{method}_history.csv").write_text("\n".join(rows) + "\n")
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


def command_args(tmp_path: Path) -> tuple[Path, Path, Path, list[str]]:
    """Results written by `write_runs`, the two outputs, and the CLI arguments naming them."""
    root = write_runs(tmp_path / "results")
    out, md = tmp_path / "r" / "ssl.json", tmp_path / "r" / "ssl.md"
    return (
        root,
        out,
        md,
        ["benchmark", "--results", str(root), "--out", str(out), "--markdown", str(md)],
    )


def test_command_writes_json_and_markdown(tmp_path: Path) -> None:
    root, out, md, args = command_args(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["366"]["imas"] == [43.0, 45.0]
    assert md.read_text().startswith("# SSL benchmark")
    (root / "92-s0" / "supervised.json").write_text('{"method": "imas", "miou": 1}')
    bad = CliRunner().invoke(app, args)
    assert bad.exit_code == 2 and "supervised.json" in bad.output


def test_dynamics_first_last_means_and_verdict(tmp_path: Path) -> None:
    root = write_runs(tmp_path / "results")
    table = collect(root)
    dyn = dynamics(load_histories(root, table))
    assert dyn["92"]["easiness"] == {"copy": 0.7, "first": 0.55, "last": 0.75}
    assert dyn["92"]["confident_ratio"] == {"copy": 0.7, "first": 0.7, "last": 0.9}
    assert dyn["366"]["confident_ratio"] == {"copy": 0.9, "first": 0.9, "last": 0.8}
    text = render_markdown(table, dyn)
    assert "| 92 | 0.700 / 0.550 → 0.750 | 0.700 / 0.700 → 0.900 | yes |" in text
    assert "| 366 | 0.900 / 0.550 → 0.750 | 0.900 / 0.900 → 0.800 | no |" in text


def test_missing_history_is_named(tmp_path: Path) -> None:
    root = write_runs(tmp_path / "results")
    (root / "92-s1" / "mean_teacher_history.csv").unlink()
    with pytest.raises(BenchmarkError, match=r"92-s1/mean_teacher_history\.csv: no such file"):
        load_histories(root, collect(root))


def test_command_figure_and_relative_link(tmp_path: Path) -> None:
    _, out, md, args = command_args(tmp_path)
    fig = tmp_path / "r" / "figures" / "dyn.png"
    result = CliRunner().invoke(app, [*args, "--figure", str(fig)])
    assert result.exit_code == 0, result.output
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](figures/dyn.png)" in md.read_text()
    first = (out.read_bytes(), md.read_bytes(), fig.read_bytes())
    assert CliRunner().invoke(app, [*args, "--figure", str(fig)]).exit_code == 0
    assert (out.read_bytes(), md.read_bytes(), fig.read_bytes()) == first


def test_benchmark_params_and_dvc_grid_resolve() -> None:
    """The committed benchmark params validate, and DVC expands the grid to one run per
    (label count, seed, method), each from that cell's warmup."""
    from pipeline.params import load_params

    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "ssl"
    params = load_params(bench / "params.yaml", [])
    grid = params.benchmark
    assert grid is not None and grid.labeled == sorted(grid.labeled)
    assert set(grid.methods) == {"supervised", "mean_teacher", "imas"}
    assert listed_stages(bench) == [*grid_stages(grid), "table"]


def test_unequal_iterations_are_refused(tmp_path: Path) -> None:
    root = write_runs(tmp_path / "results")
    table = collect(root)
    assert iterations(root, table) == {
        "92": {"warmup": 100, "train": 920},
        "366": {"warmup": 100, "train": 3660},
    }
    (root / "366-s1" / "mean_teacher.json").write_text(
        json.dumps({"method": "mean_teacher", "miou": 43.0, "iterations": 3000})
    )
    with pytest.raises(BenchmarkError, match=r"366-s1/mean_teacher\.json: 3000 iterations"):
        iterations(root, table)
