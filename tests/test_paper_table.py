"""The paper-style table: cells, "—" for runs not made, published rows, refusals, the PNG."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from dvc_grid import grid_stages, listed_stages
from typer.testing import CliRunner

from pipeline.benchmark import BenchmarkError
from pipeline.cli import app
from pipeline.paper_table import collect, render_markdown, table_rows
from pipeline.params import ParamsError, load_params

PAPER = Path(__file__).resolve().parents[1] / "benchmarks" / "paper"
# Two counts × two seeds; the one ablation runs at 92 labels only.
GRID = [
    "benchmark.labeled=[92, 366]",
    "benchmark.seeds=[0, 1]",
    "benchmark.ablations=[no_loss_weight]",
    "benchmark.ablation_labeled=[92]",
]
RUNS = {
    (92, 0): {"supervised": 20.0, "mean_teacher": 22.5, "no_loss_weight": 24.0, "imas": 26.0},
    (92, 1): {"supervised": 22.0, "mean_teacher": 23.5, "no_loss_weight": 25.0, "imas": 28.001},
    (366, 0): {"supervised": 40.0, "mean_teacher": 41.0, "imas": 43.0},
    (366, 1): {"supervised": 42.0, "mean_teacher": 43.0, "imas": 45.0},
}


def write_runs(root: Path) -> Path:
    for (labeled, seed), by_run in RUNS.items():
        folder = root / f"{labeled}-s{seed}"
        folder.mkdir(parents=True)
        warm = {"method": "supervised", "miou": 1.0, "iterations": 100}
        (folder / "warmup.json").write_text(json.dumps(warm))
        for name, miou in by_run.items():
            method = "imas" if name == "no_loss_weight" else name
            summary = {"method": method, "miou": miou, "iterations": 700}
            (folder / f"{name}.json").write_text(json.dumps(summary))
    return root


def params(*extra: str):
    return load_params(PAPER / "params.yaml", [*GRID, *extra])


def test_cells_mean_std_gains_and_dashes(tmp_path: Path) -> None:
    table, its = collect(write_runs(tmp_path / "results"), params())
    assert table["92"]["imas"] == [26.0, 28.0]  # rounded to 2 decimals on reading
    assert "no_loss_weight" not in table["366"]
    assert its == {"92": {"warmup": 100, "train": 700}, "366": {"warmup": 100, "train": 700}}
    text = render_markdown(params(), table, its)
    lines = text.splitlines()
    head = lines.index("| method | 92 labels | 366 labels |")
    assert lines[head + 1 : head + 8] == [
        "| --- | ---: | ---: |",
        "| SupOnly | 21.00 ± 1.41 | 41.00 ± 1.41 |",
        "| Mean teacher | 23.00 ± 0.71 | 42.00 ± 1.41 |",
        "| iMAS w/o loss weighting | 24.50 ± 0.71 | — |",
        "| iMAS | 27.00 ± 1.41 | 44.00 ± 1.41 |",
        "| Mean teacher gain over SupOnly | +2.00 | +1.00 |",
        "| iMAS gain over SupOnly | +6.00 | +3.00 |",
    ]
    assert lines[head + 8] == ""  # no published rows for the built-in dataset
    assert "mean ± sample standard deviation over 2 seeds (0, 1)" in text
    assert "a warmup of 100 iterations, then 700 for every run" in text
    assert "The built-in dataset has no published numbers" in text


def test_one_seed_cells_are_plain_means(tmp_path: Path) -> None:
    table, its = collect(write_runs(tmp_path / "results"), params("benchmark.seeds=[1]"))
    text = render_markdown(params("benchmark.seeds=[1]"), table, its)
    assert "| iMAS | 28.00 | 45.00 |" in text
    assert "one seed (1), so no spread" in text


def test_published_rows_for_a_preset(tmp_path: Path) -> None:
    table, _ = collect(write_runs(tmp_path / "results"), params())
    rows = table_rows(table, "voc_classic")
    published = [(r.label, r.cells) for r in rows if r.kind == "published"]
    assert published == [
        ("SupOnly (published)", ["45.5", "66.6"]),
        ("iMAS (published)", ["68.8", "79.1"]),
        ("iMAS gain over SupOnly (published)", ["+23.3", "+12.5"]),
    ]
    # Cityscapes publishes no VOC counts, and VOC classic no SupOnly at 1,464 labels.
    assert {c for r in table_rows(table, "cityscapes") if r.kind == "published"
            for c in r.cells} == {"—"}  # fmt: skip
    classic = table_rows({"1464": {"supervised": [1.0], "imas": [2.0]}}, "voc_classic")
    assert [r.cells for r in classic if r.kind == "published"] == [["—"], ["82.0"], ["—"]]
    text = render_markdown(params("benchmark.published=voc_classic"), table, _)
    assert "| iMAS (published) | 68.8 | 79.1 |" in text
    assert "PASCAL VOC 2012, classic split" in text and "no published numbers" not in text


def test_unequal_iterations_are_refused(tmp_path: Path) -> None:
    root = write_runs(tmp_path / "results")
    bad = {"method": "imas", "miou": 25.0, "iterations": 600}  # an ablation counts as a train run
    (root / "92-s1" / "no_loss_weight.json").write_text(json.dumps(bad))
    with pytest.raises(BenchmarkError, match=r"92-s1/no_loss_weight\.json: 600 iterations"):
        collect(root, params())


def command_args(tmp_path: Path, *extra: str) -> tuple[Path, list[str], list[Path]]:
    root = write_runs(tmp_path / "results")
    out, md, png = (tmp_path / "r" / n for n in ("t.json", "t.md", "figures/t.png"))
    args = ["paper-table", "--results", str(root), "--params", str(PAPER / "params.yaml")]
    args += ["--out", str(out), "--markdown", str(md), "--figure", str(png)]
    for item in [*GRID, *extra]:
        args += ["--set", item]
    return root, args, [out, md, png]


def test_command_writes_deterministic_outputs(tmp_path: Path) -> None:
    _, args, (out, md, png) = command_args(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == {
        "92": {"supervised": [20.0, 22.0], "mean_teacher": [22.5, 23.5],
               "no_loss_weight": [24.0, 25.0], "imas": [26.0, 28.0]},
        "366": {"supervised": [40.0, 42.0], "mean_teacher": [41.0, 43.0], "imas": [43.0, 45.0]},
    }  # fmt: skip
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](figures/t.png)" in md.read_text()
    first = [p.read_bytes() for p in (out, md, png)]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert [p.read_bytes() for p in (out, md, png)] == first
    # The published rows reach the figure too: a different table, a different picture.
    assert (
        CliRunner().invoke(app, [*args, "--set", "benchmark.published=voc_classic"]).exit_code == 0
    )
    assert png.read_bytes() != first[2]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("366-s1/imas.json", None, r"366-s1/imas\.json: no such file"),
        ("92-s0/no_loss_weight.json", "{not json", r"92-s0/no_loss_weight\.json: not valid JSON"),
        ("92-s1/warmup.json", '{"miou": 1}', r"92-s1/warmup\.json: expected an integer 'iter"),
        ("92-s0/mean_teacher.json", '{"method": "imas"}', r"s0/mean_teacher\.json: expected meth"),
    ],
)
def test_bad_run_file_is_named_and_nothing_written(
    tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    root, args, outputs = command_args(tmp_path)
    if content is None:
        (root / name).unlink()
    else:
        (root / name).write_text(content)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert re.search(message, result.output), result.output
    assert not any(p.exists() for p in outputs)


def test_runs_outside_the_grid_are_not_read(tmp_path: Path) -> None:
    root = write_runs(tmp_path / "results")
    (root / "366-s1" / "mean_teacher.json").unlink()
    table, _ = collect(root, params("benchmark.methods=[supervised, imas]"))
    assert list(table["366"]) == ["supervised", "imas"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "benchmark.ablations=[no_such_thing]",
            "benchmark.ablations: 'no_such_thing' is not a key",
        ),
        ("benchmark.methods=[supervised, fixmatch]", "fixmatch"),
        ("benchmark.published=voc_2007", "benchmark.published: 'voc_2007' is not a preset"),
        ("benchmark.ablation_labeled=[100]", "benchmark.ablation_labeled: 100 is not one of"),
        ("benchmark.labeled=[92, 2928]", "benchmark.labeled: 2928 leaves no unlabeled image"),
        ("benchmark.ablations=[no_loss_weight, no_loss_weight]", "repeats a value"),
    ],
)
def test_grid_params_are_validated(override: str, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        load_params(PAPER / "params.yaml", [override])


def test_paper_params_and_dvc_grid_resolve() -> None:
    """The committed grid: 5 counts, the main methods at each, the ablations at the smallest;
    DVC expands it to one warmup per cell and one run per method (ablation) from it."""
    grid = load_params(PAPER / "params.yaml").benchmark
    assert grid is not None and grid.labeled == [92, 183, 366, 732, 1464]
    assert grid.ablation_labeled == [92] and grid.published is None
    ablations = [
        f"ablate@{n}-{s}-{a}" for n in grid.ablation_labeled for s in grid.seeds
        for a in grid.ablations
    ]  # fmt: skip
    assert listed_stages(PAPER) == [*grid_stages(grid), *ablations, "table"]


def test_figure_refuses_ragged_rows(tmp_path: Path) -> None:
    from pipeline.table_figure import Row, table_figure

    with pytest.raises(ValueError, match="row 'iMAS' has 1 cells for 2"):
        table_figure(tmp_path / "t.png", ["92 labels", "366 labels"], [Row("iMAS", ["1"])], "t")
    assert not (tmp_path / "t.png").exists()
